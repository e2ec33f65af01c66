"""The whole path against real parts: Modbus simulator -> gateway -> SQLite outbox -> Mosquitto -> subscriber."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from edge.gateway import Gateway
from edge.sdk.events import PointSample, TelemetryData
from tests.e2e import load, write_config
from tests.helpers import MosquittoProcess, MqttRecorder, SimulatorProcess, free_port, until

DEVICES = 4


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(free_port(), DEVICES, ["--sim-time", "12:00"])
    sim.start()
    yield sim
    sim.stop()


def _telemetry(messages: list[tuple[str, bytes, bool]]) -> list[tuple[str, dict]]:
    out = []
    for topic, payload, _ in messages:
        if "/events/" in topic:
            event = orjson.loads(payload)
            if event["type"] == "org.edgegw.telemetry":
                out.append((topic, event))
    return out


async def _drained(gateway: Gateway) -> bool:
    return await gateway.backlog() == 0


def _outbox_rows(gateway: Gateway, *, status: bool = False) -> list[tuple[str, str, int, bytes]]:
    """Telemetry rows; `status`: device status events too (they share the device's sequence)."""
    types = "('org.edgegw.telemetry', 'org.edgegw.device.status')" if status else "('org.edgegw.telemetry')"
    with sqlite3.connect(gateway.outbox.path) as db:
        return db.execute(
            f"SELECT tenant, device, sequence, body FROM outbox WHERE type IN {types} ORDER BY position"
        ).fetchall()


async def test_every_point_arrives_as_a_valid_cloudevent_on_the_right_topic_and_in_the_outbox(
    tmp_path: Path, mosquitto: MosquittoProcess, simulator: SimulatorProcess
) -> None:
    loaded, registry = load(
        write_config(
            tmp_path / "edge.toml", mqtt_port=mosquitto.port, modbus_port=simulator.port, devices=DEVICES
        )
    )
    recorder = MqttRecorder(mosquitto.port, "edge/#")
    gateway = Gateway(loaded, registry)
    await gateway.start()
    try:
        got = await asyncio.to_thread(
            recorder.wait_for,
            lambda m: (
                {e["subject"] for _, e in _telemetry(m)}
                >= {f"roof/inv-{u:02d}" for u in range(1, DEVICES + 1)}
            ),
        )
    finally:
        await gateway.stop()
        recorder.close()

    published = {p.name for p in loaded.devices[0].points if p.publish}
    for topic, event in _telemetry(got):
        device = event["data"]["device"]
        spec = loaded.device(device)
        assert spec is not None
        assert topic == f"edge/{spec.tenant}/events/roof/{device}"
        assert event["specversion"] == "1.0" and event["tenantid"] == spec.tenant
        assert event["source"] == f"/gw-test/modbus/{device}" and event["dataversion"] == "1.1"
        assert event["time"].endswith("Z") and len(event["sequence"]) == 16
        data = TelemetryData.model_validate(event["data"])
        assert set(data.points) == published
        assert all(p.quality == "good" for p in data.points.values()), data.points
        assert (
            data.points["ac_power"].unit == "W" and data.points["ac_power"].value > 0
        )  # noon on the simulator
        assert data.points["dc_voltage"].unit == "V"
    stored = _outbox_rows(gateway, status=True)
    assert {r[1] for r in stored} == {f"inv-{u:02d}" for u in range(1, DEVICES + 1)}
    for device in {r[1] for r in stored}:
        sequences = [r[2] for r in stored if r[1] == device]
        assert sequences == list(range(1, len(sequences) + 1))  # contiguous from 1, in commit order
    # Retained latest values: a subscriber that arrives late still sees each point's current state.
    late = MqttRecorder(mosquitto.port, "edge/acme/points/roof/inv-01/#")
    try:
        retained = await asyncio.to_thread(late.wait_for, lambda m: len(m) >= len(published))
    finally:
        late.close()
    assert all(r for _, _, r in retained)
    sample = orjson.loads(dict((t, p) for t, p, _ in retained)["edge/acme/points/roof/inv-01/ac_power"])
    assert sample["unit"] == "W" and sample["quality"] == "good"


async def test_device_down_then_back_marks_points_bad_and_recovers(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    sim = SimulatorProcess(free_port(), 2, ["--sim-time", "12:00"])
    sim.start()
    # Its own topic prefix: status topics are retained, and other tests' devices have the same names.
    config = write_config(
        tmp_path / "edge.toml", mqtt_port=mosquitto.port, modbus_port=sim.port, devices=2, prefix="downup"
    )
    loaded, registry = load(config)
    recorder = MqttRecorder(mosquitto.port, "downup/+/status/#")
    gateway = Gateway(loaded, registry)
    await gateway.start()
    try:
        await asyncio.to_thread(recorder.wait_for, lambda m: sum(b'"up"' in p for _, p, _ in m) >= 2)
        sim.stop()
        await asyncio.to_thread(recorder.wait_for, lambda m: sum(b'"down"' in p for _, p, _ in m) >= 2, 15)
        assert gateway.stats.device("inv-01").up is False
        sim.start()
        await asyncio.to_thread(recorder.wait_for, lambda m: sum(b'"up"' in p for _, p, _ in m) >= 4, 40)
        assert gateway.stats.device("inv-01").up is True
    finally:
        await gateway.stop()
        recorder.close()
        sim.stop()
    rows = [orjson.loads(r[3]) for r in _outbox_rows(gateway) if r[1] == "inv-01"]
    bad = [e for e in rows if e["data"]["points"]["ac_power"]["quality"] == "bad"]
    assert bad, "polls while the device was down are stored with quality bad"
    assert bad[0]["data"]["points"]["ac_power"]["reason"]
    assert rows[-1]["data"]["points"]["ac_power"]["quality"] == "good"
    every = [orjson.loads(r[3]) for r in _outbox_rows(gateway, status=True) if r[1] == "inv-01"]
    assert [int(e["sequence"]) for e in every] == list(range(1, len(every) + 1))  # no gap across the outage


async def test_broker_restart_loses_nothing_that_was_stored(
    tmp_path: Path, simulator: SimulatorProcess
) -> None:
    broker = MosquittoProcess(tmp_path)
    broker.start()
    loaded, registry = load(
        write_config(tmp_path / "edge.toml", mqtt_port=broker.port, modbus_port=simulator.port, devices=2)
    )
    gateway = Gateway(loaded, registry)
    await gateway.start()
    recorder = MqttRecorder(broker.port, "edge/+/events/#")
    try:
        await asyncio.to_thread(recorder.wait_for, lambda m: len(m) >= 4)
        broker.kill()
        recorder.close()
        await asyncio.sleep(1.5)  # the gateway keeps polling and storing meanwhile
        stored_during_outage = gateway.outbox.committed_events
        broker.start()
        recorder = MqttRecorder(broker.port, "edge/+/events/#")
        # Everything stored while the broker was away is published once it is back.
        await asyncio.to_thread(recorder.wait_for, lambda m: len(m) > 0, 20)
        # the gateway keeps polling: the backlog was empty once, a new poll may be in it by now
        await until(lambda: _drained(gateway), 20, "an empty backlog", step=0.1)
    finally:
        await gateway.stop()
        recorder.close()
        broker.kill()
    received = {orjson.loads(p)["id"] for _, p, _ in recorder.snapshot()}
    with sqlite3.connect(gateway.outbox.path) as db:
        outage_ids = {
            r[0]
            for r in db.execute(
                "SELECT id FROM outbox WHERE position <= ? ORDER BY position DESC LIMIT 4",
                (stored_during_outage,),
            )
        }
    assert outage_ids <= received  # events committed during the outage reached the subscriber after it


async def test_sequences_continue_after_a_gateway_restart(
    tmp_path: Path, mosquitto: MosquittoProcess, simulator: SimulatorProcess
) -> None:
    path = write_config(
        tmp_path / "edge.toml", mqtt_port=mosquitto.port, modbus_port=simulator.port, devices=1
    )
    for _ in range(2):
        loaded, registry = load(path)
        gateway = Gateway(loaded, registry)
        await gateway.start()
        await asyncio.sleep(0.8)
        await gateway.stop()
    sequences = [r[2] for r in _outbox_rows(gateway, status=True)]  # up, polls, stopped; up, polls, stopped
    assert len(sequences) >= 6
    assert sequences == list(range(1, len(sequences) + 1))


async def test_write_request_over_mqtt_reaches_the_device_and_bad_ones_are_refused(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    sim = SimulatorProcess(free_port(), 1, ["--sim-time", "12:00"])
    sim.start()
    loaded, registry = load(
        write_config(tmp_path / "edge.toml", mqtt_port=mosquitto.port, modbus_port=sim.port, devices=1)
    )
    gateway = Gateway(loaded, registry)
    await gateway.start()
    recorder = MqttRecorder(mosquitto.port, "edge/acme/#")
    base = "edge/acme/cmd/roof/inv-01"
    try:
        await asyncio.to_thread(
            recorder.wait_for, lambda m: any("/points/roof/inv-01/power_limit" in t for t, _, _ in m)
        )
        recorder.publish(f"{base}/power_limit/set", b'{"value": 40, "id": "r1"}')
        recorder.publish(f"{base}/power_limit/set", b"{not json")
        recorder.publish(f"{base}/ac_power/set", b"5")  # read-only point
        recorder.publish("edge/acme/cmd/roof/inv-99/power_limit/set", b"5")  # unknown device
        results = await asyncio.to_thread(
            recorder.wait_for, lambda m: sum(t.endswith("/result") for t, _, _ in m) >= 4
        )
        limit = await asyncio.to_thread(
            recorder.wait_for,
            lambda m: any(
                t.endswith("/points/roof/inv-01/power_limit") and orjson.loads(p)["value"] == 40
                for t, p, _ in m
            ),
        )
        assert limit
    finally:
        await gateway.stop()
        recorder.close()
        sim.stop()
    replies = [orjson.loads(p) for t, p, _ in results if t.endswith("/result")]
    ok = [r for r in replies if r["ok"]]
    assert len(ok) == 1 and ok[0]["request_id"] == "r1" and ok[0]["value"] == 40
    reasons = " | ".join(r["reason"] for r in replies if not r["ok"])
    assert "not JSON" in reasons and "not writable" in reasons and "unknown device" in reasons
    assert gateway.stats.commands_rejected == 3 and gateway.stats.commands_accepted == 1


async def test_a_second_gateway_on_the_same_data_directory_is_refused(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    from edge.ops.instance import AlreadyRunning

    path = write_config(
        tmp_path / "edge.toml", mqtt_port=mosquitto.port, modbus_port=free_port(), devices=1, prefix="twice"
    )
    first = Gateway(*load(path))
    await first.start()
    try:
        with pytest.raises(AlreadyRunning, match="another gateway"):
            await Gateway(*load(path)).start()
    finally:
        await first.stop()
    second = Gateway(*load(path))  # once the first has stopped, the directory is free again
    await second.start()
    await second.stop()


async def test_one_retained_message_per_device_holds_every_point(
    tmp_path: Path, mosquitto: MosquittoProcess, simulator: SimulatorProcess
) -> None:
    ports = {"mqtt_port": mosquitto.port, "modbus_port": simulator.port}
    # the broker is shared: no retained topic of another test under this prefix
    config = write_config(tmp_path / "edge.toml", **ports, devices=2, prefix="bydevice")
    config.write_text(config.read_text().replace("[bus]\n", '[bus]\npoint_topic_mode = "device"\n', 1))
    loaded, registry = load(config)
    published = {p.name for p in loaded.devices[0].points if p.publish}
    gateway = Gateway(loaded, registry)
    await gateway.start()
    try:
        await asyncio.sleep(1.0)  # a few polls and flushes
        late = MqttRecorder(mosquitto.port, "bydevice/acme/points/#")
        try:
            retained = await asyncio.to_thread(late.wait_for, lambda m: len(m) >= 1)
            await asyncio.sleep(0.5)  # live updates, and anything else under the prefix
            got = late.snapshot()
        finally:
            late.close()
    finally:
        await gateway.stop()

    assert retained[0][2]  # what a late subscriber gets first is the retained state; live updates follow
    topics = {t for t, _, _ in got}
    assert topics == {"bydevice/acme/points/roof/inv-01"}  # inv-02 is globex's; no per-point topic at all
    state = orjson.loads(dict((t, p) for t, p, _ in got)["bydevice/acme/points/roof/inv-01"])
    assert state["device"] == "inv-01" and state["site"] == "roof"
    assert state["time"].endswith("Z") and state["sequence"] >= 1
    assert set(state["points"]) == published
    samples = {name: PointSample.model_validate(s) for name, s in state["points"].items()}
    assert samples["ac_power"].unit == "W" and samples["ac_power"].quality == "good"
