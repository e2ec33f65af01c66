"""A write through the REST API gets the command path's value check: the point's range, never a device error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api_harness import ApiGateway, api_gateway
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port

URL = "/v1/devices/inv-01/points/power_limit/value"  # a uint16 register, %


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess) -> Iterator[ApiGateway]:
    sim = SimulatorProcess(free_port(), 1, ["--sim-time", "12:00"])
    sim.start()
    try:
        yield from api_gateway(tmp_path_factory.mktemp("api-range"), mosquitto.port, sim.port)
    finally:
        sim.stop()


def test_out_of_range_and_non_finite_values_are_refused_with_the_range(api: ApiGateway) -> None:
    with api.client(api.token("acme", "operator")) as http:
        for value in (70000, -1, 1e40):
            refused = http.put(URL, json={"value": value})
            assert refused.status_code == 422, refused.text
            detail = refused.json()["detail"]
            assert "is out of range: power_limit accepts 0..65535 %" in detail, detail
        for body in (b'{"value": NaN}', b"Infinity", b'{"value": 1e400}'):
            refused = http.put(URL, content=body)
            assert refused.status_code == 422 and "is not a finite number" in refused.json()["detail"]
        assert http.put(URL, json=40).status_code == 200
