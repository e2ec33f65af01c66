"""What a device's status tells, against the Modbus inverter simulator (issue 21, item 17):

- a device that stops answering is told once (a status event "down" and one all-bad poll), then nothing until
  it answers again, instead of an identical all-bad event every poll;
- a wrong unit id says to check the unit id;
- a clean stop of the gateway sends each device's status "stopped" (and the retained status says so).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import orjson

from edge.devices.polling import DevicePoller
from edge.gateway import Gateway
from edge.sdk.events import DEVICE_STATUS, Event
from simulators.modbus_inverter import InverterSimulator
from tests.e2e import load, write_config
from tests.helpers import MosquittoProcess, MqttRecorder, free_port, until


class Recorded:
    """The outbox as a poller sees it: events in the order appended."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def append(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        out = []
        for event in self.events:
            assert event.data is not None
            if event.type == DEVICE_STATUS:
                out.append(event.data["status"])
            else:
                bad = all(s["quality"] == "bad" for s in event.data["points"].values())
                out.append("all-bad" if bad else "poll")
        return out


def poller_for(tmp_path: Path, modbus_port: int, unit_id: int = 1) -> tuple[DevicePoller, Recorded]:
    config = write_config(tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=modbus_port, devices=1)
    config.write_text(config.read_text().replace("unit_id = 1", f"unit_id = {unit_id}"))
    loaded, registry = load(config)
    spec = loaded.devices[0]
    sink = Recorded()
    poller = DevicePoller(
        spec,
        registry.driver(spec.driver),
        loaded.tenant_contexts()[spec.tenant],
        sink,
        gateway_id="gw-test",
    )
    return poller, sink


async def test_a_down_device_is_told_once_then_nothing_until_it_recovers(tmp_path: Path) -> None:
    port = free_port()
    async with InverterSimulator(1, port, sim_time="12:00", update_interval=3600) as sim:
        poller, sink = poller_for(tmp_path, port)
        task = asyncio.create_task(poller.run())
        try:
            await until(lambda: sink.kinds().count("poll") >= 2, 10, "two polls")
            sim.set_offline(1, True)
            polled = poller.stats.polls
            await until(lambda: poller.stats.polls >= polled + 8, 20, "eight polls of the silent device")
            down = sink.kinds()
            sim.set_offline(1, False)
            await until(lambda: sink.kinds()[len(down) :].count("poll") >= 2, 20, "polls after the recovery")
        finally:
            poller.request_stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert down[:2] == ["up", "poll"] and set(down[2:-2]) == {"poll"}
    assert down[-2:] == ["down", "all-bad"]  # eight polls or more, one event
    after = sink.kinds()[len(down) :]
    assert after[0] == "up" and set(after[1:-1]) == {"poll"} and after[-1] == "stopped"
    sequences = [int(e.sequence or 0) for e in sink.events]
    assert sequences == list(range(1, len(sequences) + 1))  # status events too: one contiguous sequence
    assert all(e.device == "inv-01" for e in sink.events)
    reason = next(str(e.data["reason"]) for e in sink.events if e.data and e.data.get("status") == "down")
    assert "check the unit id (connection.unit_id = 1)" in reason


class Gated(Recorded):
    """A sink that refuses events while `open` is False, as a cluster instance's does while its lease lapses."""

    def __init__(self) -> None:
        super().__init__()
        self.open = True
        self.refused = 0

    def accepts(self) -> bool:
        self.refused += not self.open
        return self.open

    async def append(self, event: Event) -> None:
        if self.open:
            self.events.append(event)


async def test_polls_a_sink_refuses_leave_no_gap_in_the_devices_sequence(tmp_path: Path) -> None:
    port = free_port()
    async with InverterSimulator(1, port, sim_time="12:00", update_interval=3600) as sim:
        assert sim is not None
        poller, _ = poller_for(tmp_path, port)
        gated = Gated()
        poller._sink = gated  # the same poller, fed to a gated sink (poller_for builds an ungated one)
        poller._accepting = gated.accepts
        task = asyncio.create_task(poller.run())
        try:
            await until(lambda: gated.kinds().count("poll") >= 2, 10, "two polls")
            gated.open = False
            await until(lambda: gated.refused >= 3, 10, "three refused polls")
            gated.open = True
            stored = len(gated.events)
            await until(lambda: len(gated.events) >= stored + 2, 10, "polls after the sink accepts again")
        finally:
            poller.request_stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    sequences = [e.sequence for e in gated.events]
    assert sequences == list(range(1, len(sequences) + 1)), sequences


async def test_a_wrong_unit_id_suggests_checking_it(tmp_path: Path) -> None:
    port = free_port()
    async with InverterSimulator(2, port, sim_time="12:00", update_interval=3600) as sim:
        sim.set_garbage(2, True)  # answers exception 4, as a gateway does for a unit it does not serve
        silent, _ = poller_for(tmp_path, port, unit_id=7)  # no such unit: nothing answers
        failing, _ = poller_for(tmp_path, port, unit_id=2)
        samples = [await silent.read_once(), await failing.read_once()]  # as `edge device test` reads
    reasons = [next(iter(s.values()))["reason"] for s in samples]
    assert reasons[0] == (
        f"no request answered (last: timeout): 127.0.0.1:{port} accepts connections, so check the unit id "
        "(connection.unit_id = 7) and that the device behind it is powered"
    )
    assert reasons[1].startswith("no request answered (last: modbus exception 4 (server device failure))")
    assert "check the unit id (connection.unit_id = 2)" in reasons[1]


async def test_a_clean_stop_sends_each_devices_status(tmp_path: Path, mosquitto: MosquittoProcess) -> None:
    port = free_port()
    async with InverterSimulator(2, port, sim_time="12:00", update_interval=3600):
        config = write_config(
            tmp_path / "edge.toml", mqtt_port=mosquitto.port, modbus_port=port, devices=2, prefix="stopping"
        )
        loaded, registry = load(config)
        recorder = MqttRecorder(mosquitto.port, "stopping/#")
        gateway = Gateway(loaded, registry)
        await gateway.start()
        try:
            await asyncio.to_thread(recorder.wait_for, lambda m: len(statuses(m, "events")) == 2, 10)
        finally:
            await gateway.stop()
        got = await asyncio.to_thread(recorder.wait_for, lambda m: len(statuses(m, "events")) == 4, 5)
        recorder.close()
    events = statuses(got, "events")
    assert sorted((e["device"], e["status"]) for e in events[2:]) == [
        ("inv-01", "stopped"),
        ("inv-02", "stopped"),
    ]
    assert all(e["reason"] == "gateway stopped" for e in events[2:])
    retained = statuses(got, "status")
    assert {(s["status"], s["reason"]) for s in retained[-2:]} == {("down", "gateway stopped")}


async def test_the_retained_status_tells_the_stop_while_values_keep_changing(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    """The trial of 2026-12-07: with values changing every poll and the default `point_min_interval` (1 s), the
    latest-value publisher sits in its coalescing wait when the gateway stops; the stop statuses it was handed
    must still reach the retained status topics, which a local system connecting later reads."""
    port = free_port()
    async with InverterSimulator(2, port, sim_time="12:00", update_interval=0.1):
        config = write_config(
            tmp_path / "edge.toml",
            mqtt_port=mosquitto.port,
            modbus_port=port,
            devices=2,
            prefix="busy",
            point_min_interval=1.0,
        )
        loaded, registry = load(config)
        recorder = MqttRecorder(mosquitto.port, "busy/+/points/#")
        gateway = Gateway(loaded, registry)
        await gateway.start()
        try:  # point updates flowing: the publisher flushes, then waits its interval
            await asyncio.to_thread(recorder.wait_for, lambda m: len({t for t, _, _ in m}) > 10, 10)
            await asyncio.sleep(1.3)
        finally:
            await gateway.stop()
        recorder.close()
    later = MqttRecorder(mosquitto.port, "busy/+/status/#")  # connects after the stop: retained messages only
    try:
        got = await asyncio.to_thread(later.wait_for, lambda m: len(m) >= 2, 5)
    finally:
        later.close()
    assert {(s["status"], s["reason"]) for s in statuses(got, "status")} == {("down", "gateway stopped")}


def statuses(messages: list[tuple[str, bytes, bool]], kind: str) -> list[dict[str, Any]]:
    """Status events ("events" topics) or retained status payloads ("status" topics), in arrival order."""
    out = []
    for topic, payload, _ in messages:
        if f"/{kind}/" not in topic:
            continue
        body = orjson.loads(payload)
        if kind == "status":
            out.append(body)
        elif body["type"] == DEVICE_STATUS:
            out.append(body["data"])
    return out
