"""Property-based run of every operation in the API's OpenAPI document: generated requests never get a 5xx.

Schemathesis generates path parameters, query strings and bodies from the served document; the gateway polls
the Modbus simulator, so device routes reach real code (latest values, history reads, writes to a device).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.api_harness import ApiGateway, api_gateway
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess) -> Iterator[ApiGateway]:
    sim = SimulatorProcess(free_port(), 2, ["--sim-time", "12:00"])
    sim.start()
    try:
        yield from api_gateway(tmp_path_factory.mktemp("fuzz"), mosquitto.port, sim.port, devices=2)
    finally:
        sim.stop()


def _run(api: ApiGateway, examples: int) -> None:
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    token = api.token("acme", "admin")  # an admin token that also names a tenant reaches every route
    headers = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=api.base_url, headers=headers)
            case.validate_response(response, checks=[not_a_server_error])
            if response.status_code >= 400:
                kind = response.headers.get("content-type")
                assert kind == ["application/problem+json"], (case.path, kind, response.text)

        check()


def test_generated_requests_never_get_a_server_error(api: ApiGateway) -> None:
    _run(api, examples=3)


@pytest.mark.slow
def test_many_generated_requests_never_get_a_server_error(api: ApiGateway) -> None:
    _run(api, examples=100)
