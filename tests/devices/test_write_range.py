"""Writes of values a point cannot hold are refused with the point's range, before the device sees them.

A real gateway (`edge run`), Mosquitto and the Modbus inverter simulator; the writes come from the `edge point
write` command and from a plain paho client, and the register is read back with pymodbus' own client. The
point is an int16 register scaled by 0.5 with an offset of -50 (%), so it accepts -16434..16333.5 %.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from pymodbus.client import ModbusTcpClient

from tests.e2e import write_config
from tests.helpers import MqttRecorder, SimulatorProcess, free_port

EDGE = [sys.executable, "-m", "edge.cli"]
RANGE = "setpoint accepts -16434..16333.5 %"
PROFILE = """
[profile]
name = "limit"
driver = "modbus"

[[points]]
name = "setpoint"
address = 40300  # the simulator's one writable register (it takes 0..100)
type = "int16"
scale = 0.5
offset = -50.0
unit = "%"
writable = true
"""


class Gateway:
    def __init__(self, config: Path, mqtt_port: int, modbus_port: int, prefix: str) -> None:
        self.config, self.mqtt_port, self.modbus_port, self.prefix = config, mqtt_port, modbus_port, prefix

    def cli_write(self, value: str) -> subprocess.CompletedProcess[str]:
        command = [*EDGE, "point", "write", "inv-01", "setpoint", value, "-c", str(self.config)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    def mqtt_write(self, payload: str, request_id: str) -> dict[str, object]:
        """Publish a request as any local system would and return the gateway's answer to it."""
        base = f"{self.prefix}/acme/cmd/roof/inv-01/setpoint"
        recorder = MqttRecorder(self.mqtt_port, f"{base}/result")
        try:
            recorder.publish(f"{base}/set", payload.encode())
            got = recorder.wait_for(
                lambda m: any(orjson.loads(p)["request_id"] == request_id for _, p, _ in m)
            )
        finally:
            recorder.close()
        return next(a for a in (orjson.loads(p) for _, p, _ in got) if a["request_id"] == request_id)

    def register(self) -> int:
        client = ModbusTcpClient("127.0.0.1", port=self.modbus_port)
        try:
            assert client.connect()
            response = client.read_holding_registers(40300, count=1, device_id=1)
            assert not response.isError()
            return int(response.registers[0])
        finally:
            client.close()


@pytest.fixture
def gateway(tmp_path: Path, mosquitto: object) -> Iterator[Gateway]:
    sim = SimulatorProcess(free_port(), 1, ["--sim-time", "12:00"])
    sim.start()
    port: int = mosquitto.port  # type: ignore[attr-defined]
    prefix = f"wr{free_port()}"
    config = write_config(
        tmp_path / "edge.toml", mqtt_port=port, modbus_port=sim.port, devices=1, prefix=prefix
    )
    (tmp_path / "limit.toml").write_text(PROFILE)
    config.write_text(config.read_text().replace('profile = "sunspec-inverter"', 'profile = "limit.toml"'))
    process = subprocess.Popen([*EDGE, "run", "-c", str(config)], stderr=subprocess.DEVNULL)
    try:
        recorder = MqttRecorder(port, f"{prefix}/acme/points/roof/inv-01/setpoint")
        recorder.wait_for(lambda m: len(m) > 0)
        recorder.close()
        yield Gateway(config, port, sim.port, prefix)
    finally:
        process.terminate()
        process.wait(20)
        sim.stop()


def test_cli_writes_negative_values_plainly_and_refuses_what_the_point_cannot_hold(gateway: Gateway) -> None:
    written = gateway.cli_write("-1")  # no `--` needed
    assert written.returncode == 0, written.stderr
    assert "inv-01.setpoint = -1: written" in written.stdout
    assert gateway.register() == 98  # (-1 + 50) / 0.5
    for value, reason in (
        ("NaN", f"NaN is not a finite number: {RANGE}"),
        ("Infinity", f"Infinity is not a finite number: {RANGE}"),
        ("-inf", f"-Infinity is not a finite number: {RANGE}"),
        ("1e40", f"1e+40 is out of range: {RANGE}"),
        ("-20000", f"-20000 is out of range: {RANGE}"),
        ("1" + "0" * 30, f"out of range: {RANGE}"),  # beyond 64 bits
    ):
        started = time.monotonic()
        refused = gateway.cli_write(value)
        assert refused.returncode == 1, (value, refused.stdout, refused.stderr)
        assert "refused: " in refused.stderr and reason in refused.stderr, (value, refused.stderr)
        assert "written" not in refused.stdout
        assert time.monotonic() - started < 10, f"{value}: answered, not timed out"
    assert gateway.register() == 98  # nothing reached the device, and nothing was released


def test_cli_names_the_points_of_the_device_when_the_point_is_unknown(gateway: Gateway) -> None:
    result = subprocess.run(
        [*EDGE, "point", "write", "inv-01", "setpiont", "5", "-c", str(gateway.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no point named 'setpiont' on device 'inv-01' (points: setpoint)" in result.stderr


def test_mqtt_writes_get_the_same_refusals_with_the_range(gateway: Gateway) -> None:
    ok = gateway.mqtt_write(json.dumps({"value": 0, "id": "zero"}), "zero")
    assert ok["ok"] is True and gateway.register() == 100
    cases = {
        "nan": (json.dumps({"value": float("nan"), "id": "nan"}), f"NaN is not a finite number: {RANGE}"),
        "inf": ('{"value": -Infinity, "id": "inf"}', f"-Infinity is not a finite number: {RANGE}"),
        "huge": ('{"value": 1e400, "id": "huge"}', f"Infinity is not a finite number: {RANGE}"),
        "big": ('{"value": 1e40, "id": "big"}', f"1e+40 is out of range: {RANGE}"),
        "low": ('{"value": -16435, "id": "low"}', f"-16435 is out of range: {RANGE}"),
        "long": ('{"value": 100000000000000000000000000000, "id": "long"}', f"is out of range: {RANGE}"),
    }
    for request_id, (payload, reason) in cases.items():
        answer = gateway.mqtt_write(payload, request_id)
        assert answer["ok"] is False and reason in str(answer["reason"]), (request_id, answer)
    unknown = MqttRecorder(gateway.mqtt_port, f"{gateway.prefix}/acme/cmd/roof/inv-01/setpt/result")
    try:
        unknown.publish(f"{gateway.prefix}/acme/cmd/roof/inv-01/setpt/set", b'{"value": 1, "id": "u"}')
        (answer,) = [orjson.loads(p) for _, p, _ in unknown.wait_for(lambda m: len(m) > 0)]
    finally:
        unknown.close()
    assert answer["ok"] is False and "no such point (points of inv-01: setpoint)" in answer["reason"]
    assert gateway.register() == 100
