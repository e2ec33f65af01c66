"""BACnet end to end: HVAC simulator -> BACnet driver (COV) -> gateway -> outbox -> Mosquitto -> subscriber.

The simulated AHU (device 1000) and VAV box (1001) sit on 127.0.6.10 and .11 on a port the module picks; the
gateway's BACnet side is 127.0.0.1 on another port. The simulator's physics is paused: tests set values.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from drivers.bacnet import BacnetDriver
from edge.config import load_config
from edge.gateway import Gateway
from edge.plugins import PluginRegistry, read_manifest
from simulators.bacnet_hvac import HvacSimulator
from tests.helpers import MosquittoProcess, MqttRecorder, free_udp_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

BASE_IP = "127.0.6.10"
Messages = list[tuple[str, bytes, bool]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[HvacSimulator]:
    simulator = HvacSimulator(1, BASE_IP, free_udp_port(BASE_IP), update_interval=0.5)
    await simulator.start()
    simulator.paused = True
    yield simulator
    await simulator.stop()


@pytest.fixture(autouse=True)
def _healthy_devices(sim: HvacSimulator) -> Iterator[None]:
    yield
    sim.clear_faults()


def registry() -> PluginRegistry:
    """The installed plug-ins, plus this driver if its entry point is not installed yet."""
    plugins = PluginRegistry.from_entry_points()
    if "bacnet" not in plugins.drivers:
        plugins.add_driver(read_manifest("drivers.bacnet"), BacnetDriver())
    return plugins


def start_gateway(
    tmp_path: Path, sim: HvacSimulator, broker: MosquittoProcess, prefix: str, mode: str
) -> Gateway:
    local = f"127.0.0.1/8:{free_udp_port()}"
    lines = [
        '[gateway]\nid = "gw-bacnet"\ndata_dir = "data"',
        f'[bus]\nmode = "external"\nport = {broker.port}\ntopic_prefix = "{prefix}"\npoint_min_interval = 0.0',
        "[storage]\ncommit_interval_ms = 5",
        '[[tenants]]\nid = "acme"\n[[sites]]\nid = "hq"',
    ]
    for device, profile in ((sim.ahu, "ahu"), (sim.vavs[0], "vav")):
        lines.append(
            f'[[devices]]\nname = "{device.name}"\ndriver = "bacnet"\ntenant = "acme"\nsite = "hq"\n'
            f'profile = "{profile}"\npoll_interval = 0.3\ntimeout = 0.5\nmode = "{mode}"\n'
            f'connection = {{ address = "{device.address}", device_instance = {device.instance}, '
            f'local_address = "{local}", check_interval = 60.0 }}'
        )
    (tmp_path / "edge.toml").write_text("\n".join(lines) + "\n")
    return Gateway(load_config(tmp_path / "edge.toml", registry()), registry())


def telemetry(messages: Messages, device: str) -> list[dict[str, Any]]:
    out = []
    for topic, payload, _ in messages:
        if topic.endswith(f"/events/hq/{device}"):
            event = orjson.loads(payload)
            if event["type"] == "org.edgegw.telemetry":
                out.append(event["data"]["points"])
    return out


def statuses(messages: Messages, device: str) -> list[str]:
    return [orjson.loads(p)["status"] for t, p, _ in messages if t.endswith(f"/status/hq/{device}")]


def reads(sim: HvacSimulator, device: int) -> int:
    requests = sim.device(device).requests
    return requests["ReadPropertyMultipleRequest"] + requests["ReadPropertyRequest"]


async def wait(recorder: MqttRecorder, predicate: Any, within: float = 10.0) -> Messages:
    got: Messages = await asyncio.to_thread(recorder.wait_for, predicate, within)
    return got


async def test_cov_changes_reach_mqtt_as_events_of_only_the_changed_points(
    tmp_path: Path, sim: HvacSimulator, mosquitto: MosquittoProcess
) -> None:
    gateway = start_gateway(tmp_path, sim, mosquitto, "bacnet-cov", mode="auto")
    recorder = MqttRecorder(mosquitto.port, "bacnet-cov/#")
    await gateway.start()
    try:
        # the first event of each device carries every point, read once when subscribing
        await wait(recorder, lambda m: telemetry(m, "ahu-1") and telemetry(m, "vav-1"))
        assert len(telemetry(recorder.snapshot(), "ahu-1")[0]) == 30
        assert len(telemetry(recorder.snapshot(), "vav-1")[0]) == 8
        polled_before = reads(sim, 1001)
        changed = time.monotonic()
        sim.set_value(1001, "zone-temp", 25.5)
        got = await wait(
            recorder,
            lambda m: any(p.get("zone-temp", {}).get("value") == 25.5 for p in telemetry(m, "vav-1")),
        )
        latency = time.monotonic() - changed
        event = next(p for p in telemetry(got, "vav-1") if p.get("zone-temp", {}).get("value") == 25.5)
        assert event == {"zone-temp": {"value": 25.5, "unit": "Cel", "quality": "good"}}
        # status flags travel as quality
        sim.set_status(1001, "zone-temp", fault=True, reliability="openLoop")
        got = await wait(
            recorder,
            lambda m: any(p.get("zone-temp", {}).get("quality") == "bad" for p in telemetry(m, "vav-1")),
        )
        bad = next(p for p in telemetry(got, "vav-1") if p.get("zone-temp", {}).get("quality") == "bad")
        assert bad["zone-temp"] == {
            "value": None,
            "unit": "Cel",
            "quality": "bad",
            "reason": "fault (reliability: open-loop)",
        }
        # the AHU's multi-state mode refuses COV: the driver polls that one object and pushes its changes
        sim.set_value(1000, "operating-mode", 3)
        await wait(
            recorder,
            lambda m: any(
                p.get("operating-mode", {}).get("value") == "unoccupied" for p in telemetry(m, "ahu-1")
            ),
        )
        # never polled while on COV: the one read is Reliability, asked when the FAULT flag came in
        assert reads(sim, 1001) == polled_before + 1
    finally:
        sim.set_status(1001, "zone-temp")
        sim.set_value(1000, "operating-mode", 2)
        await gateway.stop()
        recorder.close()
    assert latency < 1.0


async def test_writes_over_mqtt_command_at_the_point_priority_and_null_relinquishes(
    tmp_path: Path, sim: HvacSimulator, mosquitto: MosquittoProcess
) -> None:
    gateway = start_gateway(tmp_path, sim, mosquitto, "bacnet-write", mode="auto")
    recorder = MqttRecorder(mosquitto.port, "bacnet-write/#")
    base = "bacnet-write/acme/cmd/hq/vav-1/zone-temp-setpoint"
    default = sim.vavs[0].value("zone-temp-setpoint")
    await gateway.start()
    try:
        await wait(recorder, lambda m: telemetry(m, "vav-1"))
        recorder.publish(f"{base}/set", b'{"value": 23.0, "id": "w1"}')
        await wait(recorder, lambda m: any(t == f"{base}/result" for t, _, _ in m))
        assert sim.vavs[0].priority_array("zone-temp-setpoint")[7] == 23.0  # the profile's priority 8
        await wait(
            recorder,
            lambda m: any(
                p.get("zone-temp-setpoint", {}).get("value") == 23.0 for p in telemetry(m, "vav-1")
            ),
        )
        recorder.publish(f"{base}/set", b'{"value": null, "id": "w2"}')
        results = await wait(recorder, lambda m: sum(t == f"{base}/result" for t, _, _ in m) >= 2)
        assert sim.vavs[0].priority_array("zone-temp-setpoint") == [None] * 16
        assert sim.vavs[0].value("zone-temp-setpoint") == default
        recorder.publish("bacnet-write/acme/cmd/hq/vav-1/zone-temp/set", b"20")  # an input: read-only
        results = await wait(recorder, lambda m: sum(t.endswith("/result") for t, _, _ in m) >= 3)
    finally:
        await gateway.stop()
        recorder.close()
    replies = {r["request_id"]: r for r in (orjson.loads(p) for t, p, _ in results if t.endswith("/result"))}
    assert replies["w1"]["ok"] and replies["w2"]["ok"] and replies["w2"]["value"] is None
    assert any(not r["ok"] and "not writable" in r["reason"] for r in replies.values())


async def test_a_silent_device_does_not_slow_the_polls_of_another(
    tmp_path: Path, sim: HvacSimulator, mosquitto: MosquittoProcess
) -> None:
    gateway = start_gateway(tmp_path, sim, mosquitto, "bacnet-silent", mode="poll")
    recorder = MqttRecorder(mosquitto.port, "bacnet-silent/#")
    await gateway.start()
    try:
        await wait(recorder, lambda m: len(telemetry(m, "ahu-1")) >= 3 and telemetry(m, "vav-1"))
        sim.set_fault(1001, silent=True)
        await wait(recorder, lambda m: "down" in statuses(m, "vav-1"))
        before = len(telemetry(recorder.snapshot(), "ahu-1"))
        await asyncio.sleep(1.5)
        during = len(telemetry(recorder.snapshot(), "ahu-1")) - before
        sim.set_fault(1001, silent=False)
        await wait(
            recorder, lambda m: statuses(m, "vav-1")[-1:] == ["up"] and "down" in statuses(m, "vav-1"), 15
        )
    finally:
        await gateway.stop()
        recorder.close()
    assert during >= 4, f"{during} AHU polls in 1.5 s at a 0.3 s interval while the VAV box was silent"
    ahu = telemetry(recorder.snapshot(), "ahu-1")
    assert all(p["supply-air-temp"]["quality"] == "good" for p in ahu)
