"""Real `edge run` instances in cluster mode: one configuration, a PostgreSQL, a Mosquitto, the Modbus simulator.

Each instance is a child process (`edge run --instance NAME`) with its own outbox under
data/instances/NAME; what each one stored is read back from its SQLite file, so a test can tell exactly which
instance wrote which event of which device (the events on MQTT carry no instance)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg

from edge.cluster.status import ClusterStatus, cluster_status
from tests.e2e import write_config

ROOT = Path(__file__).resolve().parents[2]
TIMINGS = {"lease_ttl": 3.0, "renew_interval": 0.5, "renew_deadline": 2.0}
POLL = 0.2


@dataclass(frozen=True)
class Stored:
    instance: str
    id: str
    type: str
    device: str
    sequence: int | None
    time: float
    status: str | None  # device status events: up, down, stopped
    reason: str | None


class ClusterRig:
    def __init__(
        self,
        workdir: Path,
        dsn: str,
        password: str,
        mqtt_port: int,
        modbus_port: int,
        devices: int,
        *,
        shared_outbox: bool = False,
        alarms: bool = False,
    ) -> None:
        """`shared_outbox`: the instances share a PostgreSQL outbox in the database of `dsn` (which then also
        holds the leases), else each has its own SQLite outbox and the leases live at `dsn`."""
        self.workdir = workdir
        self.dsn, self.password = dsn, password
        self.shared_outbox = shared_outbox
        self.prefix = f"c{os.getpid() % 10_000}{workdir.name[-6:].replace('_', '')}"
        self.config = write_config(
            workdir / "edge.toml",
            mqtt_port=mqtt_port,
            modbus_port=modbus_port,
            devices=devices,
            poll_interval=POLL,
            prefix=self.prefix,
            entitlements=("alarms",) if alarms else (),
        )
        timings = "\n".join(f"{k} = {v}" for k, v in TIMINGS.items())
        text = self.config.read_text().replace('id = "gw-test"', f'id = "gw-{workdir.name[-12:]}"')
        if alarms:  # a module answering module commands (`alarms list`)
            text += '[[modules]]\nname = "alarms"\n[[modules.config.rules]]\nid = "hot"\npoint = "cabinet_temperature"\nhigh = 90.0\n'
        if shared_outbox:
            storage = f'[storage.postgresql]\ndsn = "{dsn}"\npassword = "env:EDGE_CLUSTER_PASSWORD"\n'
            text = text.replace("[storage]\n", '[storage]\nbackend = "postgresql"\n') + storage
            database = 'password = "env:EDGE_CLUSTER_PASSWORD"\n'  # unused: the outbox's is the cluster's
        else:
            database = 'dsn = "env:EDGE_CLUSTER_DSN"\npassword = "env:EDGE_CLUSTER_PASSWORD"\n'
        self.config.write_text(f"{text}[cluster]\nenabled = true\n{database}{timings}\ndrain_timeout = 10\n")
        self.cluster = f"gw-{workdir.name[-12:]}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, dsn: str | None = None) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "-c", str(self.config), "--instance", name],
            cwd=ROOT,
            env={**os.environ, **self.env(dsn)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def env(self, dsn: str | None = None) -> dict[str, str]:
        return {"EDGE_CLUSTER_DSN": dsn or self.dsn, "EDGE_CLUSTER_PASSWORD": self.password}

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def terminate(self, name: str) -> int:
        proc = self.procs.pop(name)
        proc.terminate()
        return proc.wait(40)

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]

    async def status(self) -> ClusterStatus:
        return await cluster_status(self.dsn, self.password, self.cluster)

    async def owners(self) -> dict[str, str | None]:
        state = await self.status()
        alive = {m.instance for m in state.members if m.alive}
        return {r.name: (r.owner if not r.expired and r.owner in alive else None) for r in state.devices}

    def stored(self, name: str) -> list[Stored]:
        if self.shared_outbox:
            return self._shared_rows() if name == "shared" else []
        db = self.workdir / "data" / "instances" / name / "outbox.db"
        if not db.exists():
            return []
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)
        try:
            rows = conn.execute(
                "SELECT id, type, sequence, time, body FROM outbox ORDER BY position"
            ).fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []
        finally:
            conn.close()
        return _parse(name, rows)

    def _shared_rows(self) -> list[Stored]:
        with psycopg.connect(self.dsn, password=self.password) as db:
            rows = db.execute(
                "SELECT id, type, sequence, time, body FROM edge.outbox ORDER BY position"
            ).fetchall()
        return _parse("shared", rows)

    def all_stored(self, names: list[str]) -> list[Stored]:
        if self.shared_outbox:
            return self._shared_rows()
        return [e for n in names for e in self.stored(n)]


def _parse(instance: str, rows: list[tuple[Any, ...]]) -> list[Stored]:
    out = []
    for event_id, kind, sequence, when, body in rows:
        data = orjson.loads(bytes(body)).get("data", {})
        if "device" in data:
            status, reason = data.get("status"), data.get("reason")
            out.append(Stored(instance, event_id, kind, data["device"], sequence, when, status, reason))
    return out


def single_writer_problems(events: list[Stored]) -> list[str]:
    """Every (device, sequence) written once; each device's writers take turns (no interleaving in time)."""
    problems: list[str] = []
    seen: dict[tuple[str, int], Stored] = {}
    for e in events:
        if e.sequence is None:
            continue
        other = seen.setdefault((e.device, e.sequence), e)
        if other.id != e.id:
            problems.append(f"{e.device} #{e.sequence} written by {other.instance} and {e.instance}")
    by_device: dict[str, list[Stored]] = {}
    for e in events:
        if e.sequence is not None:
            by_device.setdefault(e.device, []).append(e)
    for device, written in by_device.items():
        written.sort(key=lambda e: e.sequence or 0)
        times = [e.time for e in written]
        if times != sorted(times):
            problems.append(
                f"{device}: a lower sequence was sampled after a higher one (two writers at once)"
            )
    return problems


def gaps_reported(events: list[Stored]) -> list[str]:
    """Each jump in a device's sequence must come with the device reported down, then up, by the new owner."""
    problems: list[str] = []
    by_device: dict[str, list[Stored]] = {}
    for e in events:
        by_device.setdefault(e.device, []).append(e)
    for device, written in by_device.items():
        telemetry = sorted((e for e in written if e.sequence is not None), key=lambda e: e.sequence or 0)
        for before, after in itertools.pairwise(telemetry):
            assert before.sequence is not None and after.sequence is not None
            if after.sequence == before.sequence + 1:
                continue
            reports = [
                e
                for e in written
                if e.instance == after.instance
                and e.status is not None
                and before.time <= e.time <= after.time + 1.0
            ]
            states = [e.status for e in sorted(reports, key=lambda e: e.time)]
            if "down" not in states or "up" not in states:
                problems.append(
                    f"{device}: sequence {before.sequence} -> {after.sequence} without down/up reports ({states})"
                )
    return problems


async def wait_settled(
    rig: ClusterRig, names: list[str], devices: int, within: float = 40.0
) -> dict[str, str]:
    """Until every device is owned by one of `names` and each of them owns some; returns the owners."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            owners = await rig.owners()
        except OSError:
            owners = {}
        held = {o for o in owners.values() if o is not None}
        if len(owners) == devices and all(o in names for o in owners.values()) and held == set(names):
            return {d: o for d, o in owners.items() if o is not None}
        if asyncio.get_running_loop().time() > deadline:
            logs = "\n".join(f"--- {n}\n{rig.log(n)}" for n in names)
            raise AssertionError(f"not settled within {within} s: {owners}\n{logs}")
        await asyncio.sleep(0.2)
