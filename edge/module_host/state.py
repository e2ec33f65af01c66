"""Operators' desired module state and the gateway's module health snapshots, in `{data_dir}/modules.db`.

The CLI writes the desired state (`edge module enable|disable`) whether the gateway runs or not; a running
gateway applies it within a second and writes a health snapshot of every module each second, stamped with
the time, so the CLI can tell live health from the last words of a gateway that is down. SQLite in WAL mode
lets the two processes share the file; every statement is short.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.ops.files import private_database
from edge.sdk.transaction import transaction

FILE = "modules.db"
FRESH = 5.0  # seconds: an older snapshot means the gateway is not running (it writes every second)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS desired (
    module TEXT PRIMARY KEY, enabled INTEGER NOT NULL, changed REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot (
    module TEXT PRIMARY KEY, body TEXT NOT NULL, written REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Desired:
    enabled: bool
    changed: float  # wall time of the operator's command


@dataclass(frozen=True)
class ModuleSnapshot:
    """One module as the running gateway saw it."""

    name: str
    version: str
    run_mode: str  # in_process | isolated
    state: str  # loaded | enabled | disabled | failed | circuit_open | backoff | starting ...
    ok: bool
    detail: str
    entitlement: str | None = None
    tenants: list[str] = field(default_factory=list)
    handled: int = 0
    handler_errors: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # "type@version" -> events not delivered
    adapted: int = 0
    pid: int | None = None
    launches: int = 0
    crashes: int = 0
    last_exit: str | None = None
    written: float = 0.0  # wall time of the snapshot
    stopped: bool = False  # the gateway wrote it as it stopped

    @property
    def live(self) -> bool:
        return not self.stopped and self.age() < FRESH

    def age(self, now: float | None = None) -> float:
        return (now if now is not None else time.time()) - self.written


class ModuleStateStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE
        # one connection, opened on first use and kept: the gateway reads the desired state every second, and
        # opening the file (WAL mode, schema) costs ten times the read
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # callers come from the loop's executor threads

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                db = sqlite3.connect(
                    private_database(self.path), timeout=5.0, isolation_level=None, check_same_thread=False
                )
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                self._db = db
            yield self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def set_desired(self, module: str, enabled: bool) -> Desired:
        desired = Desired(enabled, time.time())
        with self._connection() as db:
            db.execute(
                "INSERT INTO desired VALUES (?, ?, ?) ON CONFLICT(module) DO UPDATE"
                " SET enabled = excluded.enabled, changed = excluded.changed",
                (module, int(enabled), desired.changed),
            )
        return desired

    def stamp(self) -> tuple[int, ...]:
        """Changes whenever the file does (a commit writes its WAL, a checkpoint the file): cheap enough to
        ask every second on the event loop. Empty while the file does not exist."""
        stamp: list[int] = []
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            stamp += (info.st_ino, info.st_size, info.st_mtime_ns)
        return tuple(stamp)

    def desired(self) -> dict[str, Desired]:
        if not self.path.exists():
            return {}
        with self._connection() as db:
            rows = db.execute("SELECT module, enabled, changed FROM desired").fetchall()
        return {str(m): Desired(bool(e), float(c)) for m, e, c in rows}

    def write_snapshots(self, snapshots: Iterable[ModuleSnapshot]) -> None:
        now = time.time()
        rows = [(s.name, json.dumps({**asdict(s), "written": now}), now) for s in snapshots]
        with self._connection() as db, transaction(db, immediate=False):
            db.execute("DELETE FROM snapshot")
            db.executemany("INSERT INTO snapshot VALUES (?, ?, ?)", rows)

    def mark_stopped(self) -> None:
        """The gateway stops: its snapshots stay as last words, no longer live."""
        snapshots = self.snapshots()
        rows = [(json.dumps({**asdict(s), "stopped": True}), s.name) for s in snapshots.values()]
        with self._connection() as db:
            db.executemany("UPDATE snapshot SET body = ? WHERE module = ?", rows)

    def snapshots(self) -> dict[str, ModuleSnapshot]:
        if not self.path.exists():
            return {}
        with self._connection() as db:
            rows = db.execute("SELECT module, body FROM snapshot").fetchall()
        return {str(m): _snapshot(json.loads(body)) for m, body in rows}


def _snapshot(raw: dict[str, Any]) -> ModuleSnapshot:
    return ModuleSnapshot(**raw)
