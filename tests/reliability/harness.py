"""Fault-injection harness: the real gateway process with its real neighbours, faults on demand, and an
end-to-end ledger of every event.

A `Rig` wires, on 127.0.0.1 ports it picks: the Modbus inverter simulator (its own process), a Mosquitto
(the caller's), the cloud simulator (in this event loop) behind a `FaultProxy`, and `edge run` as a child
process with cloud_sync uploading through the proxy. Faults: `Rig.kill_gateway` (SIGKILL), the broker's own
`kill`, `FaultProxy` (outage, latency, resets, slicing, stalls), `DiskFull` (a tmpfs of a given size) and
`Rig.set_clock` (libfaketime wall-clock steps, monotonic time untouched). `Ledger` accounts for each event by
id and per-device sequence: acked (committed to the outbox), delivered (at the cloud, and on MQTT), lost,
duplicated. See docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import os
import random
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
import tomlkit

from simulators.cloud import CloudSimulator, Credentials
from tests.e2e import write_config
from tests.helpers import MqttRecorder, SimulatorProcess, free_port, until, wait_port

ROOT = Path(__file__).resolve().parents[2]
CLOUD_CONSUMER = "module:cloud_sync:uplink"
LIBFAKETIME = next(
    iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))),
    Path("/usr/lib/faketime/libfaketime.so.1"),
)  # Debian's libfaketime, any architecture


# ------------------------------------------------------------------------------------------ TCP fault proxy


@dataclass
class ProxyFaults:
    """What the proxy does to each connection (a Toxiproxy equivalent). Rates are per connection."""

    latency: float = 0.0  # seconds added before each forwarded chunk
    jitter: float = 0.0  # plus up to this much, uniformly
    reset_rate: float = 0.0  # share of requests (chunks upstream) met with a reset (RST) instead
    reset_answer_rate: float = 0.0  # share of answers (chunks downstream) dropped with a reset: duplicates
    slice_bytes: int = 0  # forward in chunks of at most this many bytes (0: as read)
    limit_bytes: int = 0  # close each connection after this many bytes downstream (0: no limit)
    stall_rate: float = 0.0  # share of connections that stop forwarding (a timeout for the client)


class FaultProxy:
    """An asyncio TCP proxy on 127.0.0.1 to one upstream, with `ProxyFaults` and an outage switch.

    Bounded: at most `max_connections` at once (more are refused), every read waits at most `idle` seconds.
    """

    def __init__(self, upstream_port: int, *, seed: int = 0, max_connections: int = 64, idle: float = 30.0):
        self.upstream_port = upstream_port
        self.port = free_port()
        self.faults = ProxyFaults()
        self.random = random.Random(seed)
        self.max_connections, self.idle = max_connections, idle
        self.connections = 0
        self.resets = 0
        self.stalls = 0
        self.refused_while_down = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def down(self) -> bool:
        return self._server is None

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def set_down(self, down: bool) -> None:
        """Down: the port refuses connections and open ones are reset, as an unreachable cloud."""
        if down and self._server is not None:
            self._server.close()
            for writer in list(self._open):
                _reset(writer)
            await self._server.wait_closed()
            self._server = None
        elif not down and self._server is None:
            await self.start()

    async def stop(self) -> None:
        await self.set_down(True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if len(self._open) >= self.max_connections:
            _reset(client_w)
            return
        self.connections += 1
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.upstream_port), self.idle
            )
        except (OSError, TimeoutError):
            _reset(client_w)
            return
        stall = self.random.random() < self.faults.stall_rate
        self._open.update((client_w, up_w))
        try:
            await asyncio.gather(
                self._pump(client_r, up_w, client_w, stall),
                self._pump(up_r, client_w, up_w, stall, downstream=True),
            )
        except asyncio.CancelledError:  # the proxy stopped under an open connection
            pass
        finally:
            for w in (client_w, up_w):
                self._open.discard(w)
                w.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        other: asyncio.StreamWriter,
        stall: bool,
        downstream: bool = False,
    ) -> None:
        sent = 0
        try:
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), self.idle)
                f = self.faults  # read per chunk: a fault change reaches kept-alive connections too
                if not chunk:
                    break
                if stall:
                    self.stalls += 1
                    await asyncio.sleep(self.idle)  # hold the connection silent until the client gives up
                    break
                if self.random.random() < (f.reset_answer_rate if downstream else f.reset_rate):
                    self.resets += 1
                    _reset(writer)
                    _reset(other)
                    return
                if downstream and f.limit_bytes and sent + len(chunk) > f.limit_bytes:
                    chunk = chunk[: f.limit_bytes - sent]
                    writer.write(chunk)
                    break
                step = f.slice_bytes or len(chunk)
                for i in range(0, len(chunk), step):
                    if f.latency or f.jitter:
                        await asyncio.sleep(f.latency + self.random.uniform(0, f.jitter))
                    writer.write(chunk[i : i + step])
                    await writer.drain()
                sent += len(chunk)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        with contextlib.suppress(OSError):
            writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# ------------------------------------------------------------------------------------------ small filesystem


class DiskFull:
    """A tmpfs of `size` bytes mounted at `path` (needs CAP_SYS_ADMIN); `fill()` leaves it full, `free()`
    gives the space back. `available()` says whether this machine allows the mount."""

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size
        self.ballast = path / "ballast"

    @staticmethod
    def available(probe: Path) -> bool:
        probe.mkdir(parents=True, exist_ok=True)
        ok = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True
        )
        if ok.returncode != 0:
            return False
        subprocess.run(["umount", str(probe)], check=True)
        return True

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.path)], check=True
        )

    def umount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)

    def fill(self) -> int:
        """Write a ballast file until the filesystem refuses more; returns its size."""
        written = 0
        with self.ballast.open("ab", buffering=0) as f:
            for block in (1 << 16, 4096, 512, 1):
                while True:
                    try:
                        f.write(b"\0" * block)
                        written += block
                    except OSError:
                        break
        return written

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)

    @classmethod
    @contextlib.contextmanager
    def mounted(cls, path: Path, size: int) -> Iterator[DiskFull]:
        """A tmpfs of `size` bytes at `path` for the block; the test is skipped where mounts are refused."""
        if not cls.available(path.parent / "probe"):
            pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN); see docs/reliability.md")
        disk = cls(path, size)
        disk.mount()
        try:
            yield disk
        finally:
            disk.umount()


# ------------------------------------------------------------------------------------------ the ledger


@dataclass
class Report:
    acked: int
    delivered_cloud: int
    lost_cloud: int
    duplicates_cloud: int
    content_conflicts: int
    order_violations: int
    gaps: int
    cross_tenant: int
    pending: int = 0
    dead_lettered: int = 0
    delivered_mqtt: int = 0
    lost_mqtt: int = 0
    duplicates_mqtt: int = 0
    lost_ids: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"acked {self.acked}, cloud {self.delivered_cloud} (lost {self.lost_cloud}, pending {self.pending},"
            f" dead-lettered {self.dead_lettered}, dup"
            f" {self.duplicates_cloud}, order {self.order_violations}, gaps {self.gaps}), mqtt"
            f" {self.delivered_mqtt} (lost {self.lost_mqtt}, dup {self.duplicates_mqtt})"
        )


class Ledger:
    """Every event the gateway acked (committed to its outbox), keyed by id with (tenant, device, sequence,
    body hash, enqueue time); collected from the outbox file as often as `sample()` runs, so rows retention
    later deletes still count. `report()` sorts them into delivered, pending (after the uplink's durable
    cursor: it will still go), dead-lettered (refused by the cloud, kept with a reason) and lost (none of
    these: the one outcome that must never happen)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.acked: dict[str, tuple[str, str | None, int | None, str, float, int]] = {}

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10.0)

    def sample(self) -> int:
        if not self.db.exists():
            return 0
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT id, tenant, device, sequence, body, enqueued, position FROM outbox"
            ).fetchall()
        finally:
            conn.close()
        for i, tenant, device, seq, body, enqueued, position in rows:
            digest = hashlib.sha256(bytes(body)).hexdigest()
            self.acked.setdefault(str(i), (str(tenant), device, seq, digest, float(enqueued), int(position)))
        return len(rows)

    def _pending_and_dead(self, consumer: str) -> tuple[set[str], set[str]]:
        conn = self._connect()
        try:
            cursors = dict(
                conn.execute("SELECT tenant, position FROM cursors WHERE consumer = ?", (consumer,))
            )
            dead = {
                str(r[0]) for r in conn.execute("SELECT id FROM dead_letters WHERE consumer = ?", (consumer,))
            }
        finally:
            conn.close()
        pending = {i for i, row in self.acked.items() if row[5] > cursors.get(row[0], 0)}
        return pending, dead

    def max_gap(self) -> float:
        """The longest time between two consecutive events of one device (outbox clock): a stalled poll."""
        by_device: dict[str | None, list[float]] = {}
        for _, device, _, _, enqueued, _ in self.acked.values():
            by_device.setdefault(device, []).append(enqueued)
        gaps = [
            b - a
            for times in by_device.values()
            for a, b in zip(sorted(times), sorted(times)[1:], strict=False)
        ]
        return max(gaps, default=0.0)

    def report(
        self, cloud: RecordingCloud, mqtt: list[tuple[str, bytes, bool]] | None = None, consumer: str = ""
    ) -> Report:
        """Sort the acked events as of the last `sample()` (the gateway may have committed more since)."""
        at_cloud: dict[str, str] = {}
        for tenant in cloud.tenants:
            for _, event_id, _, _ in cloud.received(tenant):
                at_cloud[event_id] = tenant
        pending, dead = self._pending_and_dead(consumer or CLOUD_CONSUMER)
        lost = sorted(set(self.acked) - set(at_cloud) - pending - dead)
        wrong_tenant = sum(1 for i, t in at_cloud.items() if i in self.acked and self.acked[i][0] != t)
        records = cloud.tenants.values()
        report = Report(
            acked=len(self.acked),
            delivered_cloud=len(at_cloud),
            lost_cloud=len(lost),
            duplicates_cloud=sum(r.duplicates for r in records),
            content_conflicts=cloud.content_conflicts,
            order_violations=sum(r.order_violations for r in records),
            gaps=sum(r.gaps for r in records),
            cross_tenant=cloud.cross_tenant + wrong_tenant,
            pending=len(pending - set(at_cloud)),
            dead_lettered=len(dead),
            lost_ids=lost[:10],
        )
        if mqtt is not None:
            ids = [orjson.loads(p)["id"] for t, p, _ in mqtt if "/events/" in t]
            report.delivered_mqtt = len(set(ids))
            report.duplicates_mqtt = len(ids) - len(set(ids))
            report.lost_mqtt = len(set(self.acked) - set(ids))
        return report


class RecordingCloud(CloudSimulator):
    """The cloud simulator, also keeping each stored event's body hash (a resent id must be identical)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.content: dict[tuple[str, str], bytes] = {}
        self.content_conflicts = 0
        self.poison_when: Callable[[dict[str, Any]], bool] | None = None  # T05: refuse matching events (400)

    def _ingest(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any], str | None, int]:
        if self.poison_when is not None:
            with contextlib.suppress(OSError, EOFError, ValueError, orjson.JSONDecodeError):
                raw = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
                batch = orjson.loads(raw)
                if isinstance(batch, list):
                    self.faults.poison.update(
                        str(e["id"]) for e in batch if isinstance(e, dict) and self.poison_when(e)
                    )
        return super()._ingest(headers, body)

    def _store(self, tenant: str, batch: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        for event in batch:
            digest = hashlib.sha256(orjson.dumps(event, option=orjson.OPT_SORT_KEYS)).digest()
            if self.content.setdefault((event["source"], event["id"]), digest) != digest:
                self.content_conflicts += 1
        return super()._store(tenant, batch)


# ------------------------------------------------------------------------------------------ the gateway


class GatewayProcess:
    """`edge run` as a child process (optionally under libfaketime), with its own environment."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.config, self.env, self.log = config, env, log
        self.data = config.parent / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        assert self.proc is None
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge.cli", "run", "-c", str(self.config), "--log-level", "WARNING"],
                cwd=ROOT,
                env={**self.env, **(extra_env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def status(self) -> dict[str, Any] | None:
        try:
            status: dict[str, Any] = orjson.loads((self.data / "status.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return status if self.proc is not None and status.get("pid") == self.proc.pid else None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                return proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def resources(self) -> dict[str, float]:
        """RSS (MB), open fds and the outbox WAL size (MB) of the running gateway."""
        assert self.proc is not None
        p = psutil.Process(self.proc.pid)
        wal = self.data / "outbox.db-wal"
        return {
            "rss_mb": p.memory_info().rss / 2**20,
            "fds": float(p.num_fds()),
            "wal_mb": (wal.stat().st_size if wal.exists() else 0) / 2**20,
        }


def integrity_ok(db: Path) -> str:
    """PRAGMA integrity_check of an outbox file (opened read-write so a hot WAL is recovered)."""
    conn = sqlite3.connect(db, timeout=10.0)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


@dataclass(frozen=True)
class Banks:
    """The rig at a site's rate: `processes` Modbus bank simulators (their own processes, one port each) of
    `devices` devices with `registers` registers, every device polled each `poll_interval` (one request and
    one event per poll): processes x devices / poll_interval events/s offered."""

    processes: int = 5
    devices: int = 20
    registers: int = 10
    poll_interval: float = 0.02

    @property
    def offered(self) -> float:
        return self.processes * self.devices / self.poll_interval


class BankProcess:
    """`python -m simulators.modbus_bank` on a port of its own."""

    def __init__(self, devices: int, registers: int) -> None:
        self.port, self.devices, self.registers = free_port(), devices, registers
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "simulators.modbus_bank", "--port", str(self.port)]
        cmd += [
            "--devices",
            str(self.devices),
            "--registers",
            str(self.registers),
            "--update-interval",
            "0.05",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        wait_port(self.port, 20)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


def bank_profile(registers: int) -> str:
    """A profile of one uint16 point per holding register 0..registers-1 (the bank simulator's layout)."""
    lines = [
        "[profile]",
        f'name = "bank-{registers}"',
        'driver = "modbus"',
        "[defaults]",
        'table = "holding"',
    ]
    lines += ['type = "uint16"', 'unit = "W"']
    for address in range(registers):
        lines += ["[[points]]", f'name = "r{address:04d}"', f"address = {address}"]
    return "\n".join(lines) + "\n"


class Rig:
    """Simulator + cloud (behind a proxy) + gateway process for one test, on ports it picks.

    With `banks`, several bank simulators produce a site's rate (thousands of events/s) instead of the one
    inverter simulator; with `isolated_uplink`, cloud sync runs in its own process (a module a test can kill).

    `secrets` holds the canary secrets handed to the gateway (env and 0600 files): they must never show up
    in its database, WAL, logs or status file."""

    TENANTS = ("acme", "globex")

    def __init__(
        self,
        tmp: Path,
        mqtt_port: int,
        *,
        devices: int = 4,
        poll_interval: float = 0.1,
        sync: dict[str, Any] | None = None,
        seed: int = 0,
        banks: Banks | None = None,
        isolated_uplink: bool = False,
    ) -> None:
        self.banks, self.isolated_uplink = banks, isolated_uplink
        self.bank_processes = (
            [BankProcess(banks.devices, banks.registers) for _ in range(banks.processes)] if banks else []
        )
        if banks is not None:
            devices, poll_interval = banks.processes * banks.devices, banks.poll_interval
        self.tmp, self.mqtt_port, self.devices = tmp, mqtt_port, devices
        self.poll_interval, self.sync_options, self.seed = poll_interval, sync or {}, seed
        self.prefix = f"rel{uuid.uuid4().hex[:8]}"
        tag = uuid.uuid4().hex
        self.credentials = {
            t: Credentials(t, t, f"canary-client-{t}-{tag}", f"canary-hmac-{t}-{tag}".encode())
            for t in self.TENANTS
        }
        self.secrets = [c.client_secret for c in self.credentials.values()]
        self.secrets += [c.hmac_key.decode() for c in self.credentials.values()]
        self.modbus = SimulatorProcess(free_port(), devices, ["--sim-time", "12:00"])
        self.cloud = RecordingCloud(list(self.credentials.values()), seed=seed)
        self.proxy: FaultProxy | None = None
        self.gateway: GatewayProcess | None = None
        self.ledger: Ledger | None = None
        self.faketime_file = tmp / "faketime"
        self.recorder: MqttRecorder | None = None

    async def __aenter__(self) -> Rig:
        self.modbus.start()
        for bank in self.bank_processes:
            bank.start()
        await self.cloud.start()
        self.proxy = await FaultProxy(self.cloud.port, seed=self.seed).start()
        config, env = self._configure()
        self.gateway = GatewayProcess(config, env, self.tmp / "gateway.log")
        self.ledger = Ledger(self.gateway.data / "outbox.db")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.recorder is not None:
            self.recorder.close()
        if self.gateway is not None:
            self.gateway.stop()
        if self.proxy is not None:
            await self.proxy.stop()
        await self.cloud.stop()
        self.modbus.stop()
        for bank in self.bank_processes:
            bank.stop()

    def _configure(self) -> tuple[Path, dict[str, str]]:
        assert self.proxy is not None
        fleet: dict[str, Any] = {}
        if self.banks is not None:
            (self.tmp / "bank.toml").write_text(bank_profile(self.banks.registers))
            endpoints = [(b.port, unit) for b in self.bank_processes for unit in range(1, b.devices + 1)]
            # a site's retained point topics: each point at most once a second, as configured by default
            fleet = {"endpoints": endpoints, "profile": "bank.toml", "point_min_interval": 1.0}
        config = write_config(
            self.tmp / "edge.toml",
            mqtt_port=self.mqtt_port,
            modbus_port=self.modbus.port,
            devices=self.devices,
            poll_interval=self.poll_interval,
            prefix=self.prefix,
            tenants=self.TENANTS,
            **fleet,
        )
        secrets_dir = self.tmp / "secrets"
        secrets_dir.mkdir(mode=0o700, exist_ok=True)
        env = dict(os.environ)
        url = f"http://127.0.0.1:{self.proxy.port}"
        tenants: dict[str, Any] = {}
        for tenant, creds in self.credentials.items():
            key_file = secrets_dir / f"{tenant}.hmac"
            key_file.write_bytes(creds.hmac_key + b"\n")
            key_file.chmod(0o600)
            name = f"EDGE_REL_{tenant.upper()}_SECRET"
            env[name] = creds.client_secret
            tenants[tenant] = {
                "endpoint": f"{url}/v1/events",
                "token_url": f"{url}/oauth2/token",
                "client_id": creds.client_id,
                "client_secret": f"env:{name}",
                "hmac_key": f"file:{key_file}",
                "hmac_key_id": creds.key_id,
            }
        uplink = {"run_mode": "isolated"} if self.isolated_uplink else {}
        options = {"backoff_base": 0.05, "backoff_cap": 0.5, "linger": 0.05, **self.sync_options}
        with config.open("a") as fh:
            fh.write(
                tomlkit.dumps(
                    {"modules": [{"name": "cloud_sync", **uplink, "config": {**options, "tenants": tenants}}]}
                )
            )
        return config, env

    # ---- faults and observations

    def record_mqtt(self) -> MqttRecorder:
        self.recorder = MqttRecorder(self.mqtt_port, f"{self.prefix}/+/events/#")
        return self.recorder

    def start_gateway(self, faketime: bool = False) -> None:
        assert self.gateway is not None
        extra: dict[str, str] = {}
        if faketime:
            if not self.faketime_file.exists():
                self.faketime_file.write_text("+0\n")
            extra = {
                "LD_PRELOAD": str(LIBFAKETIME),
                "FAKETIME_TIMESTAMP_FILE": str(self.faketime_file),
                "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # only the wall clock steps, as NTP or an operator does
                "FAKETIME_CACHE_DURATION": "1",
            }
        self.gateway.start(extra)

    def set_clock(self, offset_seconds: int) -> None:
        """Step the gateway's wall clock to real time + offset (takes effect within ~1 s)."""
        self.faketime_file.write_text(f"{offset_seconds:+d}\n")

    async def wait_running(self, within: float = 20.0) -> float:
        """Seconds from now until the gateway wrote its first status file (it polls from then)."""
        assert self.gateway is not None
        t0 = time.monotonic()
        gw = self.gateway
        await until(lambda: gw.status() is not None or not gw.alive(), within, "the gateway's first status")
        assert gw.alive(), gw.output()
        return time.monotonic() - t0

    def kill_gateway(self) -> None:
        assert self.gateway is not None and self.ledger is not None
        self.gateway.kill()
        self.ledger.sample()

    def cloud_backlog(self) -> int | None:
        assert self.gateway is not None
        status = self.gateway.status()
        return None if status is None else int(status["module_backlogs"].get(CLOUD_CONSUMER, -1))

    def outbox_total(self) -> int:
        assert self.ledger is not None
        self.ledger.sample()
        return len(self.ledger.acked)

    async def drained(self, within: float = 30.0) -> None:
        """Wait until every event acked so far is at the cloud (readings go on meanwhile)."""
        assert self.ledger is not None
        self.ledger.sample()
        due = set(self.ledger.acked)

        def done() -> bool:
            seen = {e[1] for t in self.cloud.tenants for e in self.cloud.received(t)}
            return due <= seen

        await until(done, within, f"{len(due)} acked events at the cloud", step=0.2)

    def secret_hits(self) -> list[str]:
        """Files of the gateway (database, WAL, logs, status, broker files) that contain a canary secret."""
        assert self.gateway is not None
        hits = []
        files = [self.gateway.log, *self.gateway.data.rglob("*")]
        for path in files:
            if not path.is_file():
                continue
            content = path.read_bytes()
            hits += [f"{path.name}: {s[:12]}..." for s in self.secrets if s.encode() in content]
        return hits
