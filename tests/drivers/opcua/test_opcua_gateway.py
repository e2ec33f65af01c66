"""OPC UA through the whole gateway: lift simulator → subscription → normalizer → outbox → Mosquitto → subscriber.

The devices poll every 30 s, so every change seen within seconds was pushed by the server's subscription.
Writes go the way an operator's system sends them: an MQTT command, answered on the result topic.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from edge.config import load_config
from edge.gateway import Gateway
from edge.plugins import DRIVER_GROUP, PluginRegistry
from simulators.opcua_lift import LiftSimulator
from tests.helpers import MosquittoProcess, MqttRecorder, free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

OPCUA_ENTRY = EntryPoint(name="opcua", value="drivers.opcua:OpcuaDriver", group=DRIVER_GROUP)
_prefixes = itertools.count(1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[LiftSimulator]:
    lifts = LiftSimulator(free_port(), 2, speed=9.0, door_time=0.1, dwell_time=0.2, auto=False)
    await lifts.start()
    yield lifts
    await lifts.stop()


def _config(
    tmp_path: Path,
    broker: MosquittoProcess,
    sim: LiftSimulator,
    prefix: str,
    lifts: tuple[int, ...] = (1, 2),
    poll_interval: float = 30.0,
) -> Path:
    lines = [
        "[gateway]",
        'id = "gw-opcua"',
        'data_dir = "data"',
        "[bus]",
        'mode = "external"',
        f"port = {broker.port}",
        "point_min_interval = 0.0",
        f'topic_prefix = "{prefix}"',
        "[storage]",
        "commit_interval_ms = 5",
        "[[tenants]]",
        'id = "acme"',
        "[[sites]]",
        'id = "tower"',
    ]
    for lift in lifts:
        lines += [
            "[[devices]]",
            f'name = "lift-{lift}"',
            'driver = "opcua"',
            'tenant = "acme"',
            'site = "tower"',
            'profile = "lift"',
            f"poll_interval = {poll_interval}",
            "timeout = 2.0",
            f'connection = {{ url = "{sim.url}", security = "None", node_variables = {{ lift = "Lift{lift}" }} }}',
        ]
    path = tmp_path / "edge.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _gateway(tmp_path: Path, broker: MosquittoProcess, sim: LiftSimulator) -> tuple[Gateway, str]:
    prefix = f"opcua-e2e-{next(_prefixes)}-{free_port()}"  # status topics are retained: never share a prefix
    registry = PluginRegistry.from_entry_points([OPCUA_ENTRY])
    gateway = Gateway(load_config(_config(tmp_path, broker, sim, prefix), registry), registry)
    await gateway.start()
    return gateway, prefix


def _events(
    messages: list[tuple[str, bytes, bool]], device: str, kind: str = "telemetry"
) -> list[dict[str, Any]]:
    out = []
    for topic, payload, _ in messages:
        if topic.endswith(f"/events/tower/{device}"):
            event = orjson.loads(payload)
            if event["type"] == f"org.edgegw.{kind}":
                out.append(event)
    return out


def _value(event: dict[str, Any], point: str) -> Any:
    sample = event["data"]["points"].get(point)
    return None if sample is None else sample["value"]


async def _wait(
    recorder: MqttRecorder, predicate: Any, within: float = 15.0
) -> list[tuple[str, bytes, bool]]:
    return await asyncio.to_thread(recorder.wait_for, predicate, within)


async def test_changes_arrive_on_mqtt_without_polling_and_commands_move_the_lift(
    tmp_path: Path, mosquitto: MosquittoProcess, sim: LiftSimulator
) -> None:
    gateway, prefix = await _gateway(tmp_path, mosquitto, sim)
    recorder = MqttRecorder(mosquitto.port, f"{prefix}/#")
    try:
        got = await _wait(recorder, lambda m: _events(m, "lift-1") and _events(m, "lift-2"))
        first = _events(got, "lift-1")[0]
        assert len(first["data"]["points"]) == 12  # the subscription's initial values: every point
        assert first["data"]["points"]["car_load"]["unit"] == "kg"
        start_trips = sim.state(1).trip_counter
        target = 6 if sim.state(1).current_floor != 6 else 2
        command = f"{prefix}/acme/cmd/tower/lift-1/target_floor/set"
        await asyncio.to_thread(recorder.publish, command, orjson.dumps({"value": target, "id": "trip-1"}))
        got = await _wait(
            recorder,
            lambda m: any(_value(e, "trip_counter") == start_trips + 1 for e in _events(m, "lift-1")),
        )
    finally:
        await gateway.stop()
        recorder.close()
    result = next(orjson.loads(p) for t, p, _ in got if t.endswith("/lift-1/target_floor/result"))
    assert result["ok"] is True and result["request_id"] == "trip-1"
    telemetry = _events(got, "lift-1")
    floors = [_value(e, "current_floor") for e in telemetry if _value(e, "current_floor") is not None]
    assert floors[-1] == target and len(set(floors)) >= 3  # it passed floors on the way, each pushed
    assert all(len(e["data"]["points"]) < 12 for e in telemetry[1:])  # only what changed
    assert any(_value(e, "door_open") is True for e in telemetry)
    assert all(s["quality"] == "good" for e in telemetry for s in e["data"]["points"].values())
    every = telemetry + _events(got, "lift-1", "device.status")  # one sequence for both kinds
    assert sorted(int(e["sequence"]) for e in every) == list(range(1, len(every) + 1))
    assert gateway.stats.device("lift-1").failed_polls == 0


async def test_server_restart_is_a_reported_gap_and_subscriptions_come_back(
    tmp_path: Path, mosquitto: MosquittoProcess, sim: LiftSimulator
) -> None:
    gateway, prefix = await _gateway(tmp_path, mosquitto, sim)
    recorder = MqttRecorder(mosquitto.port, f"{prefix}/#")
    status_topic = f"{prefix}/acme/status/tower/lift-2"

    def statuses(messages: list[tuple[str, bytes, bool]]) -> list[str]:
        return [orjson.loads(p)["status"] for t, p, _ in messages if t == status_topic]

    try:
        await _wait(recorder, lambda m: statuses(m)[-1:] == ["up"])
        await sim.restart(downtime=1.0)
        await _wait(recorder, lambda m: statuses(m)[-2:] == ["down", "up"], within=20.0)
        assert gateway.stats.device("lift-2").up is True
        before = sim.state(2)
        target = 3 if before.current_floor != 3 else 7
        command = f"{prefix}/acme/cmd/tower/lift-2/target_floor/set"
        await asyncio.to_thread(
            recorder.publish, command, orjson.dumps({"value": target, "id": "after-restart"})
        )
        got = await _wait(
            recorder,
            lambda m: any(_value(e, "trip_counter") == before.trip_counter + 1 for e in _events(m, "lift-2")),
        )
    finally:
        await gateway.stop()
        recorder.close()
    status_events = _events(got, "lift-2", "device.status")
    assert [e["data"]["status"] for e in status_events] == ["up", "down", "up"]
    down, up = status_events[1], status_events[2]
    assert "connection lost" in down["data"]["reason"]
    assert down["time"] <= up["time"]  # the gap, with its bounds, for anyone replaying the stream
    telemetry = _events(got, "lift-2")
    bad = [e for e in telemetry if e["data"]["points"].get("current_floor", {}).get("quality") == "bad"]
    assert bad and "connection lost" in bad[0]["data"]["points"]["current_floor"]["reason"]
    after = telemetry[telemetry.index(bad[-1]) + 1]
    assert len(after["data"]["points"]) == 12  # resubscribed: every point's current value again
    assert all(s["quality"] == "good" for s in after["data"]["points"].values())
    with sqlite3.connect(gateway.outbox.path) as db:
        sequences = [
            r[0]
            for r in db.execute(
                "SELECT sequence FROM outbox WHERE device = 'lift-2' ORDER BY position"  # telemetry and status
            )
        ]
    assert sequences == list(range(1, len(sequences) + 1))  # no sequence gap across the outage


async def test_a_server_that_refuses_subscriptions_is_polled_with_batched_reads(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    busy = LiftSimulator(free_port(), 1, max_subscriptions=0, auto=False)
    await busy.start()
    try:
        prefix = f"opcua-poll-{free_port()}"
        config = _config(tmp_path, mosquitto, busy, prefix, lifts=(1,), poll_interval=0.2)
        registry = PluginRegistry.from_entry_points([OPCUA_ENTRY])
        gateway = Gateway(load_config(config, registry), registry)
        recorder = MqttRecorder(mosquitto.port, f"{prefix}/#")
        await gateway.start()
        try:
            got = await _wait(recorder, lambda m: len(_events(m, "lift-1")) >= 4)
        finally:
            await gateway.stop()
            recorder.close()
    finally:
        await busy.stop()
    telemetry = _events(got, "lift-1")
    assert all(len(e["data"]["points"]) == 12 for e in telemetry)  # whole polls, not changes
    assert all(s["quality"] == "good" for e in telemetry for s in e["data"]["points"].values())
