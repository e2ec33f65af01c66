"""What a technician commissioning BACnet devices runs into (issue 21, items 13, 15 and 17), against the HVAC
simulator through a real gateway and Mosquitto, and checked with a plain paho subscriber:

- every point gets a retained latest value once read, also when it never changes under COV;
- a write the device applies but answers with an error is reported by what the device holds;
- `edge point write --priority` writes at that priority;
- a device instance that does not match the address says which instance is there.

The simulated AHU (device 1000) and VAV box (1001) sit on 127.0.9.10 and .11, on a port the module picks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from typer.testing import CliRunner

from drivers.bacnet import BacnetConnection, BacnetDriver, BacnetPoint
from edge.cli import app as edge_app
from edge.config import load_config
from edge.gateway import Gateway
from edge.plugins import PluginRegistry
from edge.sdk.drivers import DeviceSpec
from edge.sdk.errors import DeviceUnreachable, WriteRejected
from simulators.bacnet_hvac import HvacSimulator
from tests.helpers import MosquittoProcess, MqttRecorder, free_udp_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

BASE_IP = "127.0.9.10"
VAV_POINTS = 8  # points of the shipped vav profile
Messages = list[tuple[str, bytes, bool]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[HvacSimulator]:
    simulator = HvacSimulator(1, BASE_IP, free_udp_port(BASE_IP), update_interval=0.5)
    await simulator.start()
    simulator.paused = True  # values change only when a test says so
    yield simulator
    await simulator.stop()


@pytest.fixture(autouse=True)
def _healthy_devices(sim: HvacSimulator) -> Iterator[None]:
    yield
    sim.clear_faults()


def write_config(
    tmp_path: Path, sim: HvacSimulator, broker: MosquittoProcess, prefix: str, point_min_interval: float
) -> Path:
    vav = sim.vavs[0]
    lines = [
        '[gateway]\nid = "gw-commission"\ndata_dir = "data"',
        f'[bus]\nmode = "external"\nport = {broker.port}\ntopic_prefix = "{prefix}"\n'
        f"point_min_interval = {point_min_interval}",
        "[storage]\ncommit_interval_ms = 5",
        '[[tenants]]\nid = "acme"\n[[sites]]\nid = "hq"',
        f'[[devices]]\nname = "{vav.name}"\ndriver = "bacnet"\ntenant = "acme"\nsite = "hq"\n'
        f'profile = "vav"\npoll_interval = 0.3\ntimeout = 0.5\nmode = "auto"\n'
        f'connection = {{ address = "{vav.address}", device_instance = {vav.instance}, '
        f'local_address = "127.0.0.1/8:{free_udp_port()}", check_interval = 60.0 }}',
    ]
    path = tmp_path / "edge.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def gateway_for(config: Path) -> Gateway:
    registry = PluginRegistry.from_entry_points()
    return Gateway(load_config(config, registry), registry)


def telemetry(messages: Messages, device: str) -> list[dict[str, Any]]:
    out = []
    for topic, payload, _ in messages:
        if topic.endswith(f"/events/hq/{device}"):
            event = orjson.loads(payload)
            if event["type"] == "org.edgegw.telemetry":
                out.append(event["data"]["points"])
    return out


async def wait(recorder: MqttRecorder, predicate: Any, within: float = 10.0) -> Messages:
    got: Messages = await asyncio.to_thread(recorder.wait_for, predicate, within)
    return got


async def test_points_that_never_change_under_cov_get_a_retained_value(
    tmp_path: Path, sim: HvacSimulator, mosquitto: MosquittoProcess
) -> None:
    # the default rate limit of the retained topics (1 s): COV changes arrive while the first poll waits in it
    gateway = gateway_for(write_config(tmp_path, sim, mosquitto, "retained-cov", point_min_interval=1.0))
    recorder = MqttRecorder(mosquitto.port, "retained-cov/acme/events/#")
    await gateway.start()
    try:
        await wait(recorder, lambda m: telemetry(m, "vav-1"))
        for step in range(5):  # the zone temperature moves; nothing else on the box changes
            sim.set_value(1001, "zone-temp", 22.0 + step)
            await asyncio.sleep(0.1)
        await wait(
            recorder,
            lambda m: any(p.get("zone-temp", {}).get("value") == 26.0 for p in telemetry(m, "vav-1")),
        )
        assert len(telemetry(recorder.snapshot(), "vav-1")[-1]) < VAV_POINTS  # only the changed points
        await asyncio.sleep(2.5)  # two rate-limit intervals
        late = MqttRecorder(mosquitto.port, "retained-cov/acme/points/hq/vav-1/#")  # a subscriber joining now
        try:
            retained = await wait(late, lambda m: len({t for t, _, r in m if r}) >= VAV_POINTS, 5.0)
        finally:
            late.close()
    finally:
        await gateway.stop()
        recorder.close()
    latest = {t.rsplit("/", 1)[-1]: orjson.loads(p) for t, p, r in retained if r}
    assert len(latest) == VAV_POINTS
    assert latest["zone-temp"]["value"] == 26.0 and latest["zone-temp"]["quality"] == "good"
    setpoint = sim.vavs[0].value("zone-temp-setpoint")
    assert latest["zone-temp-setpoint"]["value"] == setpoint  # never changed, read once when subscribing


async def test_a_write_applied_then_answered_with_an_error_reports_what_the_device_holds(
    sim: HvacSimulator,
) -> None:
    vav = sim.vavs[0]
    point = BacnetPoint(name="sp", object_type="analog-value", instance=1, writable=True, priority=9)
    driver = BacnetDriver()
    device = DeviceSpec(
        "vav-1", "acme", "hq", "bacnet",
        BacnetConnection(address=vav.address, device_instance=vav.instance,
                         local_address=f"127.0.0.1/8:{free_udp_port()}", retries=0),
        (point,), 1.0, 0.5, "p",
    )  # fmt: skip
    session = driver.session(device)
    await session.connect()
    try:
        sim.set_fault(
            1001, write_error=True
        )  # applies the write, then answers Error device/operational-problem
        note = await session.write(point, 24.5)  # the device holds what was written: the write took effect
        assert note == (  # and the user is told what the device answered and holds (trial of 2026-12-07)
            "the device answered bacnet error device: operational-problem but holds the value written "
            "(priority 9 holds 24.5, present value 24.5)"
        )
        assert vav.priority_array("zone-temp-setpoint")[8] == 24.5 and vav.value("zone-temp-setpoint") == 24.5
        await session.write(point, None)  # relinquished, though answered with an error
        assert vav.priority_array("zone-temp-setpoint")[8] is None
        sim.set_fault(
            1001, write_error=False, error=True
        )  # answers every request with an error, applies nothing
        with pytest.raises(WriteRejected) as refused:
            await session.write(point, 25.0)
        assert "operational-problem; read back: priority 9 unreadable" in refused.value.reason
    finally:
        sim.clear_faults()
        await session.write(point, None)
        await session.close()
    assert vav.priority_array("zone-temp-setpoint")[8] is None


async def test_edge_point_write_takes_a_priority(
    tmp_path: Path, sim: HvacSimulator, mosquitto: MosquittoProcess
) -> None:
    config = write_config(tmp_path, sim, mosquitto, "write-priority", point_min_interval=0.0)
    gateway = gateway_for(config)
    recorder = MqttRecorder(mosquitto.port, "write-priority/acme/events/#")
    vav = sim.vavs[0]
    await gateway.start()
    try:
        await wait(recorder, lambda m: telemetry(m, "vav-1"))
        args = [
            "point",
            "write",
            "vav-1",
            "zone-temp-setpoint",
            "22.5",
            "--priority",
            "10",
            "-c",
            str(config),
        ]
        written = await asyncio.to_thread(CliRunner().invoke, edge_app, args)
        slots = vav.priority_array("zone-temp-setpoint")
        sim.set_fault(1001, write_error=True)
        args[4] = "23.5"
        applied = await asyncio.to_thread(CliRunner().invoke, edge_app, args)
        after_error = vav.priority_array("zone-temp-setpoint")[9]
        sim.set_fault(1001, write_error=False)
        bad = await asyncio.to_thread(CliRunner().invoke, edge_app, [*args[:5], "--priority", "6", *args[7:]])
        args[4] = "null"
        await asyncio.to_thread(CliRunner().invoke, edge_app, args)
    finally:
        await gateway.stop()
        recorder.close()
    assert written.exit_code == 0, written.output
    assert "vav-1.zone-temp-setpoint = 22.5: written" in written.output
    assert slots[9] == 22.5 and slots[7] is None  # priority 10, not the profile's 8
    assert applied.exit_code == 0, applied.output  # the device holds it: written, whatever it answered
    assert (
        "vav-1.zone-temp-setpoint = 23.5: written; the device answered bacnet error device: "
        in applied.output
    )
    assert "operational-problem but holds the value written (priority 10 holds 23.5" in applied.output
    assert after_error == 23.5
    assert bad.exit_code == 1 and "priority 6" in bad.output and "reserved" in bad.output
    assert vav.priority_array("zone-temp-setpoint") == [None] * 16


async def test_a_device_instance_that_does_not_match_the_address_says_which_is_there(
    sim: HvacSimulator,
) -> None:
    vav = sim.vavs[0]
    point = BacnetPoint(name="zone-temp", object_type="analog-input", instance=1)
    device = DeviceSpec(
        "vav-1", "acme", "hq", "bacnet",
        BacnetConnection(address=vav.address, device_instance=1005, local_address=f"127.0.0.1/8:{free_udp_port()}"),
        (point,), 1.0, 0.5, "p",
    )  # fmt: skip
    with pytest.raises(DeviceUnreachable) as caught:
        await BacnetDriver().session(device).connect()
    assert caught.value.reason == (
        f"{vav.address}: device instance 1005 is not at this address (bacnet error object: unknown-object): "
        "the device there is instance 1001; set connection.device_instance = 1001 or correct the address"
    )
