"""`edge webhook ...` as an operator uses it: with the gateway stopped, and against a running gateway."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from standardwebhooks.webhooks import Webhook
from typer.testing import CliRunner, Result

from edge.cli import app
from tests.e2e import write_config
from tests.helpers import SimulatorProcess, free_port, wait_port

EDGE = [sys.executable, "-m", "edge.cli"]


def _edge(*args: str) -> Result:
    """The command in-process (a subprocess costs a second of start-up per call)."""
    return CliRunner().invoke(app, list(args))


def _config(tmp_path: Path, **kwargs: object) -> Path:
    defaults: dict[str, object] = {"mqtt_port": free_port(), "modbus_port": free_port(), "devices": 0}
    config = write_config(tmp_path / "edge.toml", **{**defaults, **kwargs})  # type: ignore[arg-type]
    with config.open("a") as f:
        f.write('[webhooks]\nallow_networks = ["127.0.0.1/32"]\nreload_interval = 0.5\n')
    return config


class _Receiver(http.server.ThreadingHTTPServer):
    """A plain standard-library receiver, as a partner's system might be."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                body = self.rfile.read(length)
                if (
                    len(body) < length
                ):  # the sender went away mid-body (the test stops the gateway): not a delivery
                    return
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/edge"


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.shutdown()
    r.server_close()


def test_manage_subscriptions_with_the_gateway_stopped(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    added = _edge("webhook", "add", "http://127.0.0.1:9/in", "-t", "acme", "--site", "roof", "-c", config)
    assert added.exit_code == 0, added.output
    sub_id = added.output.split()[0]
    secret = next(line for line in added.output.splitlines() if line.startswith("secret: ")).split()[1]
    assert sub_id.startswith("wh_") and secret.startswith("whsec_")
    listed = _edge("webhook", "list", "-t", "acme", "--json", "-c", config)
    (row,) = orjson.loads(listed.output)  # one JSON array, as every list's --json
    assert row["url"] == "http://127.0.0.1:9/in" and row["sites"] == ["roof"] and row["state"] == "active"
    assert "whsec_" not in listed.output  # the secret is shown once, at creation
    assert "no webhook subscriptions" in _edge("webhook", "list", "-t", "globex", "-c", config).output
    other = _edge("webhook", "remove", sub_id, "-t", "globex", "-c", config)  # another tenant's id
    assert other.exit_code == 3 and "has no webhook subscription" in other.output
    assert "paused" in _edge("webhook", "pause", sub_id, "-t", "acme", "-c", config).output
    assert "active" in _edge("webhook", "resume", sub_id, "-t", "acme", "-c", config).output
    rotated = _edge("webhook", "rotate-secret", sub_id, "-t", "acme", "--grace", "60", "-c", config)
    assert rotated.exit_code == 0 and "secret: whsec_" in rotated.output and secret not in rotated.output
    assert "no dead letters" in _edge("webhook", "dead-letters", sub_id, "-t", "acme", "-c", config).output
    assert "0 dead letters" in _edge("webhook", "replay", sub_id, "-t", "acme", "-c", config).output
    assert _edge("webhook", "remove", sub_id, "-t", "acme", "-c", config).exit_code == 0
    assert "no webhook subscriptions" in _edge("webhook", "list", "-t", "acme", "-c", config).output
    refused = _edge("webhook", "add", "http://10.0.0.7/in", "-t", "acme", "-c", config)
    assert refused.exit_code == 2 and "private address" in refused.output
    unknown = _edge("webhook", "add", "http://127.0.0.1:9/in", "-t", "initech", "-c", config)
    assert unknown.exit_code == 2 and "unknown tenant 'initech'" in unknown.output


def test_a_subscription_added_while_the_gateway_runs_receives_signed_telemetry(
    tmp_path: Path, receiver: _Receiver
) -> None:
    sim = SimulatorProcess(free_port(), 2, ["--sim-time", "12:00"])
    sim.start()
    mqtt_port = free_port()
    config = str(_config(tmp_path, mqtt_port=mqtt_port, modbus_port=sim.port, devices=2, mode="embedded"))
    gateway = subprocess.Popen([*EDGE, "run", "-c", config], stderr=subprocess.PIPE, text=True)
    try:
        wait_port(mqtt_port, 20)
        added = _edge("webhook", "add", receiver.url, "-t", "acme", "--device", "inv-01", "-c", config)
        assert added.exit_code == 0, added.output
        secret = added.output.split("secret: ")[1].split()[0]
        deadline = time.monotonic() + 10
        while len(receiver.got) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        gateway.terminate()
        _, stderr = gateway.communicate(timeout=30)
        sim.stop()
    assert len(receiver.got) >= 3, stderr[-2000:]
    for headers, body in receiver.got:
        Webhook(secret).verify(body, headers)
        event = orjson.loads(body)
        assert event["tenantid"] == "acme" and event["data"]["device"] == "inv-01"
