"""`edge status` against a real `edge run`: exit codes as the broker goes away and the gateway dies, the log
level switched by signal, and a secret canary that never reaches the logs, the outbox or the status file."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from edge.cli import app
from tests.e2e import write_config
from tests.helpers import MosquittoProcess, SimulatorProcess, wait_until

EDGE = [sys.executable, "-m", "edge.cli"]
CANARY = "canary-41d2-secret-of-the-bus"


@dataclass
class _Status:
    returncode: int
    stdout: str


def _status(config: Path) -> _Status:
    """`edge status` in-process: it only reads the status file, like a monitoring agent would."""
    result = CliRunner().invoke(app, ["status", "-c", str(config)])
    return _Status(result.exit_code, result.output)


def _datagrams(sock: socket.socket) -> list[str]:
    out = []
    with contextlib.suppress(BlockingIOError):
        while True:
            out.append(sock.recv(4096).decode())
    return out


def test_status_exit_codes_follow_the_gateway_and_no_secret_leaks(
    tmp_path: Path, private_mosquitto: MosquittoProcess, simulator: SimulatorProcess
) -> None:
    config = write_config(
        tmp_path / "edge.toml", mqtt_port=private_mosquitto.port, modbus_port=simulator.port, devices=2
    )
    (tmp_path / "mqtt.password").write_text(CANARY + "\n")
    (tmp_path / "mqtt.password").chmod(0o600)
    text = config.read_text().replace("[bus]\n", '[bus]\nusername = "gw"\npassword = "file:mqtt.password"\n')
    config.write_text(text)
    assert _status(config).returncode == 4  # nothing runs yet
    log_file = tmp_path / "gateway.log"
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # stands in for systemd's notify socket
    systemd.bind(str(tmp_path / "notify"))
    systemd.setblocking(False)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    with log_file.open("w") as log:
        gateway = subprocess.Popen(
            [*EDGE, "run", "-c", str(config), "--log-format", "kv"], stderr=log, env=env
        )
    status_file = tmp_path / "data" / "status.json"
    try:
        wait_until(lambda: _status(config).returncode == 0, within=20.0)
        shown = _status(config).stdout
        for check in ("loop", "storage", "broker", "driver:modbus"):
            assert f"\n{check} " in shown and "FAIL" not in shown, shown
        assert "2/2 devices up" in shown
        assert "event loop uvloop" in shown  # the gateway's default loop (edge/ops/eventloop.py)
        notes = _datagrams(systemd)
        assert notes[0].startswith("READY=1") and any(n.startswith("WATCHDOG=1\nSTATUS=ok") for n in notes)

        gateway.send_signal(signal.SIGUSR1)
        wait_until(lambda: json.loads(status_file.read_text())["log_level"] == "DEBUG", within=20.0)
        time.sleep(1.5)  # a few polls logged at DEBUG
        gateway.send_signal(signal.SIGUSR2)
        wait_until(lambda: json.loads(status_file.read_text())["log_level"] == "INFO", within=20.0)

        private_mosquitto.kill()
        wait_until(lambda: _status(config).returncode == 3, within=20.0)
        _datagrams(systemd)
        time.sleep(1.5)
        assert all(n.startswith("WATCHDOG=1\nSTATUS=not ready") for n in _datagrams(systemd))  # still live
        assert re.search(r"\nbroker +FAIL +ready +cannot reach 127.0.0.1", _status(config).stdout)

        gateway.kill()
        gateway.wait(10)
        result = _status(config)
        assert result.returncode == 4 and "not live" in result.stdout
    finally:
        if gateway.poll() is None:
            gateway.kill()
    logs = log_file.read_text()
    assert "tenant=acme device=inv-01" in logs or "tenant=globex device=inv-02" in logs, logs[-2000:]
    assert "level=debug" in logs
    for path in [log_file, status_file, *(tmp_path / "data").glob("outbox.db*")]:
        assert CANARY.encode() not in path.read_bytes(), path
