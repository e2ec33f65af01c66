"""The two measured processes around a run: the gateway under test and the bench subscriber."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench.procs import Children, ProcessCpu, peak_rss_mb
from edge.ops.status import status_file

__all__ = ["GatewayProcess", "SubscriberProcess", "read_outbox"]


class GatewayProcess:
    """`python -m edge.cli run -c CONFIG` as a child; its status file, CPU time and memory."""

    def __init__(self, config: Path, children: Children, loop_probe: Path | None = None) -> None:
        self.config = config = config.absolute()
        self.loop_probe = loop_probe  # `edge run --loop-probe`: the loop's stalls, written at the stop
        self.children = children
        self.data_dir = config.parent / "data"
        self.log = config.parent / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self._cpu: ProcessCpu | None = None
        self._ps: psutil.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        argv = [sys.executable, "-m", "edge.cli", "run", "-c", str(self.config), "--log-level", "WARNING"]
        if self.loop_probe is not None:
            argv += ["--loop-probe", str(self.loop_probe.absolute())]
        self.proc = self.children.spawn(argv, log=self.log, cwd=self.config.parent)
        self._cpu = ProcessCpu([self.proc.pid])
        self._ps = psutil.Process(self.proc.pid)

    def wait_ready(self, devices: int, timeout: float = 60.0) -> dict[str, Any]:
        """Until every device is up and the bus is connected; raises RuntimeError with the log's tail."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            status = self.status() or {}
            if status.get("devices_up") == devices and status.get("bus_connected"):
                return status
            time.sleep(0.2)
        raise RuntimeError(
            f"gateway not ready after {timeout:g} s (last status {status}); log: {self.log_tail()}"
        )

    def status(self) -> dict[str, Any] | None:
        try:
            data = orjson.loads(status_file(self.data_dir).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def cpu_seconds(self) -> float:
        assert self._cpu is not None
        return self._cpu.seconds()

    def rss_mb(self) -> float | None:
        try:
            return float(self._ps.memory_info().rss) / 1e6 if self._ps else None
        except psutil.Error:
            return None

    def peak_rss_mb(self) -> float | None:
        return peak_rss_mb(self.pid)

    def wait_backlog_drained(self, timeout: float) -> float | None:
        """Seconds until status.json shows backlog 0 (fresh, written after this call), or None on timeout."""
        started = time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            status = self.status()
            if status and status["time"] > started and status["backlog"] == 0 and status["bus_connected"]:
                return float(status["time"]) - started
            time.sleep(0.1)
        return None

    def stop(self) -> int:
        """SIGTERM; the gateway must exit 0 within 10 s (else it is killed and the code says so)."""
        if self.proc is None:
            return self.exit_code or 0
        self.exit_code = self.children.stop(self.proc, grace=10.0)
        self.proc = None
        return self.exit_code

    def log_tail(self, size: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-size:]
        return ""

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with code {self.proc.returncode}: {self.log_tail()}")


class SubscriberProcess:
    """`python -m bench.subscriber` as a child; its progress lines are read by a thread."""

    def __init__(
        self,
        workdir: Path,
        broker_port: int,
        children: Children,
        prefix: str = "edge",
        tenant: str = "+",
        nats_user: tuple[str, str] | None = None,
    ) -> None:
        self.tenant = tenant
        self.nats_user = nats_user  # (user, password) on nats-server's MQTT listener
        self.out = workdir / "received.json"
        self.log = workdir / "subscriber.log"
        self.broker_port = broker_port
        self.prefix = prefix
        self.children = children
        self.proc: subprocess.Popen[bytes] | None = None
        self.progress: dict[str, Any] = {}
        self.ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 15.0) -> None:
        argv = [sys.executable, "-m", "bench.subscriber", "--port", str(self.broker_port)]
        argv += ["--prefix", self.prefix, "--tenant", self.tenant, "--out", str(self.out)]
        if self.nats_user is not None:
            argv += ["--mqtt311", "--username", self.nats_user[0], "--password", self.nats_user[1]]
        self.proc = self.children.spawn(argv, log=self.log, stdout_pipe=True)
        self._reader = threading.Thread(target=self._read, name="bench-subscriber-progress", daemon=True)
        self._reader.start()
        if not self.ready.wait(timeout):
            raise RuntimeError(f"bench subscriber not subscribed within {timeout:g} s")

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stdout:
                try:
                    msg = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if msg.get("ready"):
                    self.ready.set()
                else:
                    self.progress = msg

    def wait_quiet(self, quiet: float = 1.0, timeout: float = 15.0) -> None:
        """Until no event arrived for `quiet` seconds (bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            events = int(self.progress.get("events", 0))
            if events != last:
                last, since = events, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.1)

    def stop(self) -> dict[str, Any]:
        """Stop it and return what it recorded."""
        if self.proc is not None:
            self.children.stop(self.proc, grace=30.0)
            self.proc = None
        if self._reader is not None:
            self._reader.join(2.0)
        data = orjson.loads(self.out.read_bytes())
        assert isinstance(data, dict)
        return data


def read_pg_outbox(dsn: str, password: str) -> dict[str, Any]:
    """`read_outbox` of a PostgreSQL outbox (the shared tables, schema `edge`)."""
    import psycopg

    with psycopg.connect(dsn, password=password) as conn:
        conn.execute("SET search_path TO edge")
        rows = conn.execute("SELECT position, id, tenant, type FROM outbox ORDER BY position").fetchall()
        cursors = dict(
            conn.execute("SELECT tenant, position FROM cursors WHERE consumer = 'mqtt'").fetchall()
        )
    return {"rows": [tuple(r) for r in rows], "cursors": cursors}


def read_outbox(db: Path) -> dict[str, Any]:
    """Read the stopped gateway's outbox read-only: every stored event and the MQTT publisher's cursors."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT position, id, tenant, type FROM outbox ORDER BY position").fetchall()
        cursors = dict(
            conn.execute("SELECT tenant, position FROM cursors WHERE consumer = 'mqtt'").fetchall()
        )
    finally:
        conn.close()
    return {"rows": rows, "cursors": cursors}
