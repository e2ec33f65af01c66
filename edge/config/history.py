"""Versions of the configuration file and the journal of a deployment in progress, in
`{data_dir}/config-history.db`.

The file on disk stays the source of truth; this keeps what it was: each distinct text the gateway ran on
(at start, after a deployment, after a rollback), with where it came from and what became of it, for
`edge config history|rollback`. A deployment writes its journal entry (the text before it) *before* it
replaces the file, and clears it once applied or rolled back; a gateway killed in between finds the entry at
its next start (`recover_interrupted`, before the file is loaded) and restores the text before, so it always
comes back on a configuration that was running and good. New text replaces the file atomically
(`write_atomically`: temporary file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ConfigHistory",
    "ConfigVersion",
    "Interrupted",
    "history_for",
    "recover_interrupted",
    "sha",
    "write_atomically",
]

FILE = "config-history.db"
KEEP = 100  # versions kept; older ones are dropped

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    n INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, source TEXT NOT NULL, label TEXT NOT NULL,
    sha TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    one INTEGER PRIMARY KEY CHECK (one = 1), tenant TEXT NOT NULL, jti TEXT NOT NULL, label TEXT NOT NULL,
    previous TEXT NOT NULL, state TEXT NOT NULL, started REAL NOT NULL
);
"""


@dataclass(frozen=True)
class ConfigVersion:
    n: int
    at: float
    source: str  # start | deployment | rollback
    label: str  # the deployment's version, or what `edge config rollback` restored
    sha: str
    status: str  # running | applied | rolled_back
    reason: str | None
    text: str


@dataclass(frozen=True)
class Interrupted:
    """A deployment the gateway did not finish (it was killed); the text before it is back in the file."""

    tenant: str
    jti: str
    label: str


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a crash leaves either the old or the new file, whole."""
    handle, temp = tempfile.mkstemp(prefix=".edge-", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            os.chmod(temp, path.stat().st_mode & 0o777)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _switch_to_wal(db: sqlite3.Connection) -> None:
    """Cluster instances sharing one configuration open this file at the same moment: switching the journal
    mode answers "locked" at once, without SQLite's busy wait, so try again for a bounded time."""
    for attempt in range(50):  # bounded: 50 tries, 0.1 s apart
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.1)


class ConfigHistory:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            data_dir / FILE, timeout=5.0, isolation_level=None, check_same_thread=False
        )
        _switch_to_wal(self._db)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def record(
        self, text: str, *, source: str, label: str = "", status: str = "running", reason: str | None = None
    ) -> int:
        """Keep a version (a text the gateway ran on); the same text as the newest running one is not
        recorded again at start."""
        digest = sha(text)
        latest = self.versions(1)
        if source == "start" and latest and latest[0].sha == digest:
            return latest[0].n
        cursor = self._db.execute(
            "INSERT INTO versions (at, source, label, sha, status, reason, text) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time(), source, label, digest, status, reason, text),
        )
        self._db.execute("DELETE FROM versions WHERE n <= (SELECT MAX(n) FROM versions) - ?", (KEEP,))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def versions(self, limit: int = KEEP) -> list[ConfigVersion]:
        rows = self._db.execute(
            "SELECT n, at, source, label, sha, status, reason, text FROM versions ORDER BY n DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [ConfigVersion(*row) for row in rows]

    def version(self, n: int) -> ConfigVersion | None:
        row = self._db.execute(
            "SELECT n, at, source, label, sha, status, reason, text FROM versions WHERE n = ?", (n,)
        ).fetchone()
        return ConfigVersion(*row) if row else None

    def begin(self, tenant: str, jti: str, label: str, previous: str) -> None:
        """Journal a deployment before the file changes: what to restore if the gateway dies mid-way."""
        self._db.execute(
            "INSERT OR REPLACE INTO journal VALUES (1, ?, ?, ?, ?, 'applying', ?)",
            (tenant, jti, label, previous, time.time()),
        )

    def end(self) -> None:
        self._db.execute("DELETE FROM journal")

    def interrupted(self) -> Interrupted | None:
        """A deployment `recover_interrupted` undid, not yet reported upstream (the downlink reports it)."""
        row = self._db.execute(
            "SELECT tenant, jti, label FROM journal WHERE state = 'interrupted'"
        ).fetchone()
        return Interrupted(*row) if row else None

    def recover(self, path: Path) -> Interrupted | None:
        row = self._db.execute(
            "SELECT tenant, jti, label, previous FROM journal WHERE state = 'applying'"
        ).fetchone()
        if row is None:
            return None
        tenant, jti, label, previous = row
        if not path.exists() or path.read_text() != previous:
            write_atomically(path, previous)
        self.record(
            previous,
            source="rollback",
            label=label,
            reason=f"deployment {label} interrupted: the gateway stopped before it was applied",
        )
        self._db.execute("UPDATE journal SET state = 'interrupted'")
        return Interrupted(tenant, jti, label)


def history_for(config: Path) -> ConfigHistory:
    """The history of the gateway that runs on `config` (its data_dir read from the file itself)."""
    with config.open("rb") as fh:
        raw = tomllib.load(fh)
    gateway = raw.get("gateway", {})
    data_dir = gateway.get("data_dir", "var") if isinstance(gateway, dict) else "var"
    return ConfigHistory((config.parent / str(data_dir)).resolve())


def recover_interrupted(config: Path) -> Interrupted | None:
    """Before the gateway loads `config`: undo a deployment a killed gateway left half-done."""
    try:
        history = history_for(config)
    except (OSError, tomllib.TOMLDecodeError):
        return None  # the loader reports an unreadable file with file and reason
    try:
        return history.recover(config)
    finally:
        history.close()
