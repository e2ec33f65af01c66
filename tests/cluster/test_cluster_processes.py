"""Real `edge run` instances in cluster mode on the Modbus simulator, a real PostgreSQL and Mosquitto:
kill -9 under load, a partition between one instance and PostgreSQL, a rolling drain, a PostgreSQL restart.

What each instance stored is read from its own outbox (tests/cluster/rig.py), so every assertion is about who
wrote which sequence of which device; the events on MQTT show that nothing stored was lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from bench.postgres import PostgresServer
from tests.cluster.conftest import FreezableProxy
from tests.cluster.rig import POLL, TIMINGS, ClusterRig, gaps_reported, single_writer_problems, wait_settled
from tests.helpers import MosquittoProcess, MqttRecorder, SimulatorProcess, free_port, until

DEVICES = 9
BOUND = (
    TIMINGS["lease_ttl"] + 2 * TIMINGS["renew_interval"] + POLL + 1.5
)  # kill -> polled elsewhere (docs/scale.md)


@pytest.fixture(scope="module")
def simulator() -> AsyncIterator[SimulatorProcess]:
    with SimulatorProcess(free_port(), DEVICES) as sim:
        yield sim


@pytest.fixture
def rig(
    tmp_path: Path, postgres: PostgresServer, mosquitto: MosquittoProcess, simulator: SimulatorProcess
) -> AsyncIterator[ClusterRig]:
    cluster = ClusterRig(tmp_path, postgres.dsn(), postgres.password, mosquitto.port, simulator.port, DEVICES)
    yield cluster
    cluster.stop_all()


def _first_after(events: list, device: str, after: float, not_by: str) -> float | None:
    times = [
        e.time
        for e in events
        if e.device == device and e.sequence and e.time > after and e.instance != not_by
    ]
    return min(times) if times else None


async def test_kill_9_under_load_moves_devices_within_the_bound_and_loses_nothing(
    rig: ClusterRig, mosquitto: MosquittoProcess
) -> None:
    recorder = MqttRecorder(mosquitto.port, f"{rig.prefix}/+/events/#")
    names = ["a", "b", "c"]
    for name in names:
        rig.start(name)
    await wait_settled(rig, names, DEVICES)
    await asyncio.sleep(1.0)  # under load: every device polled five times a second
    # the owners right before the kill: "settled" means each instance owns some, and balancing may still
    # have moved a device since
    owners = {d: o for d, o in (await rig.owners()).items() if o is not None}
    victim = owners["inv-01"]
    orphans = [d for d, o in owners.items() if o == victim]
    rig.kill(victim)
    killed = time.time()
    survivors = [n for n in names if n != victim]
    await wait_settled(rig, survivors, DEVICES, within=BOUND + 5)

    def resumed() -> dict[str, float] | None:
        events = rig.all_stored(survivors)
        firsts = {d: _first_after(events, d, killed, victim) for d in orphans}
        return {d: t for d, t in firsts.items() if t is not None} if all(firsts.values()) else None

    firsts = await until(resumed, within=BOUND + 5)
    worst = max(firsts.values()) - killed
    assert worst < BOUND, f"devices of {victim} polled again after {worst:.1f} s (bound {BOUND:.1f} s)"

    rig.start(victim)  # it publishes what it stored before the kill, and takes its share back cleanly
    await wait_settled(rig, names, DEVICES)
    await asyncio.sleep(1.0)
    for name in names:
        assert rig.terminate(name) == 0, rig.log(name)
    events = rig.all_stored(names)
    assert not single_writer_problems(events)
    assert not gaps_reported(events)
    down = [e for e in events if e.status == "down" and e.reason and f"instance {victim}" in e.reason]
    assert {e.device for e in down} == set(orphans), "each orphan reported down (unpolled), then up"
    stored_ids = {e.id for e in events}
    await until(
        lambda: stored_ids <= _ids(recorder), within=15, detail=lambda: len(stored_ids - _ids(recorder))
    )
    recorder.close()


def _module_commands(rig: ClusterRig) -> list[Any]:
    out = []
    for name in ("a", "b"):
        db = rig.workdir / "data" / "instances" / name / "outbox.db"
        if db.exists():
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                rows = conn.execute(
                    "SELECT id FROM outbox WHERE type = 'org.edgegw.module.command'"
                ).fetchall()
            out += [SimpleNamespace(instance=name, id=r[0]) for r in rows]
    return out


def _ids(recorder: MqttRecorder) -> set[str]:
    return {orjson.loads(payload)["id"] for _, payload, _ in recorder.snapshot()}


async def test_partition_from_postgres_stops_polling_before_the_lease_expires(
    rig: ClusterRig, postgres: PostgresServer
) -> None:
    proxy = FreezableProxy(postgres.port)
    try:
        rig.start("a", dsn=proxy.dsn(postgres))
        rig.start("b")
        owners = await wait_settled(rig, ["a", "b"], DEVICES)
        held = [d for d, o in owners.items() if o == "a"]
        await asyncio.sleep(1.0)
        proxy.freeze()
        frozen = time.time()
        await until(lambda: all(_first_after(rig.all_stored(["b"]), d, frozen, "a") for d in held), within=15)
        events = rig.all_stored(["a", "b"])
        for device in held:
            last_by_a = max(e.time for e in events if e.device == device and e.instance == "a" and e.sequence)
            first_by_b = _first_after(events, device, frozen, "a")
            assert first_by_b is not None and last_by_a < first_by_b, f"{device}: two owners polled at once"
            assert last_by_a - frozen < TIMINGS["renew_deadline"] + POLL + 0.5
        assert not single_writer_problems(events)
        assert "no lease renewal" in rig.log("a")
        proxy.thaw()  # healed: it joins again and takes its share back, handed over without a gap
        await wait_settled(rig, ["a", "b"], DEVICES)
        await asyncio.sleep(1.0)
        events = rig.all_stored(["a", "b"])
        assert not single_writer_problems(events)
        assert not gaps_reported(events)
    finally:
        proxy.close()


async def test_drain_status_and_postgres_restart(
    tmp_path: Path, postgres: PostgresServer, mosquitto: MosquittoProcess, simulator: SimulatorProcess
) -> None:
    rig = ClusterRig(
        tmp_path, postgres.dsn(), postgres.password, mosquitto.port, simulator.port, DEVICES, alarms=True
    )
    try:
        await _drain_status_and_restart(rig, postgres, mosquitto)
    finally:
        rig.stop_all()


async def _drain_status_and_restart(
    rig: ClusterRig, postgres: PostgresServer, mosquitto: MosquittoProcess
) -> None:
    for name in ("a", "b"):
        rig.start(name)
    owners = await wait_settled(rig, ["a", "b"], DEVICES)
    leaders = await until(lambda: _leaders(rig), within=10)
    commands = MqttRecorder(mosquitto.port, f"{rig.prefix}/#")  # a module command reaches every instance
    commands.publish(f"{rig.prefix}/acme/cmd/module/alarms/list", b"{}")

    def queued() -> list[str]:
        return [e.instance for e in _module_commands(rig)]

    elsewhere = rig.workdir / "other-host"  # the same file with another data directory, as on another host
    elsewhere.mkdir()
    (elsewhere / "edge.toml").write_text(rig.config.read_text())
    twin = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "edge.cli", "run", "-c", str(elsewhere / "edge.toml"), "--instance", "a"],
        capture_output=True,
        text=True,
        env={**rig.env(), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert twin.returncode == 4 and "already runs on" in twin.stderr, twin.stderr  # one process per name

    assert await until(queued, within=10) == [leaders["acme"]], "queued once, by the tenant's leader"
    await asyncio.sleep(1.0)
    assert queued() == [leaders["acme"]]
    commands.close()
    cli = [sys.executable, "-m", "edge.cli", "cluster"]
    env_dsn = {**rig.env(), "PATH": "/usr/bin:/bin"}
    shown = await asyncio.to_thread(
        subprocess.run,
        [*cli, "status", "-c", str(rig.config), "--json"],
        capture_output=True,
        text=True,
        env=env_dsn,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    state = json.loads(shown.stdout)[0]
    assert {m["instance"]: m["devices"] for m in state["members"]} == {
        n: sum(1 for o in owners.values() if o == n) for n in ("a", "b")
    }
    assert sorted(state["leaders"]) == ["acme", "globex"] and set(state["leaders"].values()) <= {"a", "b"}

    health = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "edge.cli", "status", "-c", str(rig.config), "--instance", "a"],
        capture_output=True,
        text=True,
        env=env_dsn,
        timeout=30,
    )
    assert health.returncode in (0, 1), health.stdout  # live and ready (degraded only if a device is down)

    await asyncio.to_thread(postgres.restart)  # quicker than the renew deadline: nobody stops polling
    await asyncio.sleep(TIMINGS["lease_ttl"])
    assert await wait_settled(rig, ["a", "b"], DEVICES) == owners

    drained = await asyncio.to_thread(
        subprocess.run,
        [*cli, "drain", "b", "-c", str(rig.config)],
        capture_output=True,
        text=True,
        env=env_dsn,
        timeout=30,
    )
    assert drained.returncode == 0, drained.stderr
    await wait_settled(rig, ["a"], DEVICES, within=10)
    assert rig.terminate("b") == 0
    await asyncio.sleep(1.0)
    assert rig.terminate("a") == 0  # the last one: nobody to hand over to, leases released for the next start
    events = rig.all_stored(["a", "b"])
    assert not single_writer_problems(events)
    assert not gaps_reported(events), "a drain hands devices over without a gap"


async def test_shared_postgres_outbox_kill_9_of_a_leader(
    tmp_path: Path, postgres: PostgresServer, mosquitto: MosquittoProcess, simulator: SimulatorProcess
) -> None:
    """One PostgreSQL outbox for all instances: sequences continue across owners, commits are fenced, and each
    tenant's MQTT publisher runs on its leader; killing the leader moves both its devices and its tenants."""
    dsn = postgres.create_database(f"shared_{uuid.uuid4().hex[:8]}")
    rig = ClusterRig(
        tmp_path, dsn, postgres.password, mosquitto.port, simulator.port, DEVICES, shared_outbox=True
    )
    recorder = MqttRecorder(mosquitto.port, f"{rig.prefix}/+/events/#")
    names = ["a", "b", "c"]
    try:
        for name in names:
            rig.start(name)
        owners = await wait_settled(rig, names, DEVICES)
        leaders = await until(lambda: _leaders(rig), within=10)
        await asyncio.sleep(1.0)
        victim = leaders["acme"]
        orphans = [d for d, o in owners.items() if o == victim]
        rig.kill(victim)
        killed = time.time()
        survivors = [n for n in names if n != victim]
        await wait_settled(rig, survivors, DEVICES, within=BOUND + 5)
        await until(
            lambda: all(_first_after(rig.all_stored([]), d, killed, victim) for d in orphans), within=5
        )
        after = await until(lambda: _leaders(rig), within=5)
        assert after["acme"] in survivors
        await asyncio.sleep(1.0)
        for name in survivors:
            assert rig.terminate(name) == 0, rig.log(name)
        events = rig.all_stored([])
        assert not single_writer_problems(events)
        assert not gaps_reported(events)
        stored_ids = {e.id for e in events}
        await until(
            lambda: stored_ids <= _ids(recorder), within=15, detail=lambda: len(stored_ids - _ids(recorder))
        )
    finally:
        recorder.close()
        rig.stop_all()


async def _leaders(rig: ClusterRig) -> dict[str, str] | None:
    state = await rig.status()
    alive = {m.instance for m in state.members if m.alive}
    leaders = {r.name: r.owner for r in state.leaders if not r.expired and r.owner in alive}
    return {t: o for t, o in leaders.items() if o is not None} if len(leaders) == 2 else None
