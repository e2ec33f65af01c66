"""The API as part of the gateway's life: configuration errors, a busy port, and a device that is down."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.api import ApiError
from edge.gateway import Gateway
from edge.sdk.errors import ConfigError
from tests.api_harness import ApiGateway, api_gateway
from tests.e2e import load, write_config
from tests.helpers import MosquittoProcess, free_port


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess) -> Iterator[ApiGateway]:
    # one device on a port where nothing listens: it stays down
    yield from api_gateway(
        tmp_path_factory.mktemp("down"), mosquitto.port, free_port(), devices=1, max_auth_failures=20
    )


def test_a_write_to_a_device_that_is_down_is_502_with_the_reason(api: ApiGateway) -> None:
    with api.client(api.token("acme", "operator")) as http:
        api.wait_for(lambda: http.get("/v1/devices").json()[0]["up"] is False, what="device down")
        device = http.get("/v1/devices/inv-01").json()
        assert device["last_error"] and all(p["quality"] == "bad" for p in device["point_values"])
        answer = http.put("/v1/devices/inv-01/points/power_limit/value", json={"value": 50})
    assert answer.status_code == 502, answer.text
    body = answer.json()
    assert body["detail"].startswith("write refused: ") and body["device"] == "inv-01" and body["value"] == 50


def test_a_client_failing_authentication_20_times_a_second_gets_429(api: ApiGateway) -> None:
    with api.client("garbage") as http:
        answers = [http.get("/v1/devices") for _ in range(25)]
        statuses = [a.status_code for a in answers]
        assert statuses[:20] == [401] * 20 and 429 in statuses[20:], statuses
        limited = next(a for a in answers if a.status_code == 429)
        assert limited.headers["retry-after"] == "1" and "too many failed" in limited.json()["detail"]
    time.sleep(1.1)
    with api.client(api.token("acme")) as http:
        assert http.get("/v1/devices").status_code == 200


def test_plain_http_on_a_non_loopback_address_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    path = write_config(tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=free_port(), devices=0)
    base = path.read_text()
    path.write_text(base + '\n[api]\nenabled = true\nhost = "0.0.0.0"\nport = 8080\n')
    with pytest.raises(ConfigError) as failed:
        load(path)
    (issue,) = failed.value.issues
    assert issue.file.endswith("edge.toml") and issue.location.startswith("api")
    assert "not a loopback address and no TLS" in issue.reason and "allow_plain_http" in issue.reason
    path.write_text(base + '\n[api]\nenabled = true\nhost = "0.0.0.0"\nallow_plain_http = true\n')
    assert load(path)[0].config.api.allow_plain_http
    path.write_text(base + '\n[api]\nenabled = true\ntls_cert = "c.pem"\n')
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        load(path)


async def test_a_busy_api_port_fails_the_start_with_a_clear_error(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_config(
            tmp_path / "edge.toml", mqtt_port=mosquitto.port, modbus_port=free_port(), devices=0
        )
        section = '\n[api]\nenabled = true\nport = {}\n[api.oidc]\nissuer = "https://idp.example"\naudience = "edge"\n'
        path.write_text(path.read_text() + section.format(port))
        gateway = Gateway(*load(path))
        with pytest.raises(ApiError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            await gateway.start()
    again = Gateway(*load(path))  # everything was released: the data directory can be used again
    await again.start()
    await again.stop()
