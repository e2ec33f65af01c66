"""One tenant's stored data as a whole: move it between tiers, export it, erase it (edge.outbox.router).

Moves and erasure need the gateway stopped (the caller holds the data directory's instance lock); export
reads a snapshot and works while it runs.

A move copies every row the outbox keeps for the tenant (events, cursors, sequences, dead letters, consumer
status, usage, drop counts) into the target database in one transaction, checks that every event arrived,
and only then deletes the source rows. Run again after a crash, it finishes the job: the copy replaces any
partial copy, and a finished copy is never deleted before the check. Into the shared database, the tenant's
positions are renumbered after the shared ones (positions are per database), cursors with them, so every
consumer resumes exactly where it stopped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

from edge.outbox.migrations import migrate
from edge.sdk.errors import EdgeError
from edge.sdk.transaction import transaction
from edge.version import __version__

__all__ = [
    "TenantMoveError",
    "erase_tenant",
    "export_tenant",
    "has_rows",
    "move_tenant",
    "tenant_event_count",
]

# Tables keyed by tenant, and which of their columns hold an outbox position.
_TABLES: dict[str, tuple[str, ...]] = {
    "outbox": ("position",),
    "cursors": ("position",),
    "dead_letters": ("position",),
    "device_sequences": (),
    "consumer_status": (),
    "tenant_usage": (),
    "drop_counts": (),
}

Tier = Literal["shared", "dedicated"]


class TenantMoveError(EdgeError):
    pass


@dataclass(frozen=True)
class MoveResult:
    tenant: str
    events: int
    source: Path
    target: Path


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    try:
        yield db
    finally:
        db.close()


def tenant_event_count(path: Path, tenant: str) -> int:
    if not path.exists():
        return 0
    with _connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox WHERE tenant = ?", (tenant,)).fetchone()[0])


def move_tenant(tenant: str, source: Path, target: Path, *, renumber: bool) -> MoveResult:
    """Move the tenant's rows from `source` to `target`; `renumber` when `target` is shared by other tenants.

    A source that keeps nothing for the tenant means an earlier move finished: nothing is copied (copying
    would first clear the target's rows, the only copy left)."""
    if not has_rows(source, tenant):
        return MoveResult(tenant, 0, source, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    migrate(target, __version__)  # creates or upgrades the schema
    migrate(source, __version__)
    with _connect(target) as db:
        db.execute("ATTACH DATABASE ? AS src", (str(source),))
        with transaction(db):
            expected = _copy(db, tenant, renumber)
        arrived = int(
            db.execute("SELECT COUNT(*) FROM main.outbox WHERE tenant = ?", (tenant,)).fetchone()[0]
        )
        if arrived != expected:
            raise TenantMoveError(f"tenant {tenant!r}: {arrived} of {expected} events copied; source kept")
        with transaction(db):
            for table in _TABLES:
                db.execute(f"DELETE FROM src.{table} WHERE tenant = ?", (tenant,))
        db.execute("DETACH DATABASE src")
    return MoveResult(tenant, expected, source, target)


def _copy(db: sqlite3.Connection, tenant: str, renumber: bool) -> int:
    for table in _TABLES:  # a partial copy of an earlier, interrupted move
        db.execute(f"DELETE FROM main.{table} WHERE tenant = ?", (tenant,))
    positions = sorted(
        {
            int(p)
            for (p,) in db.execute(
                "SELECT position FROM src.outbox WHERE tenant = ? UNION SELECT position FROM src.dead_letters"
                " WHERE tenant = ?",
                (tenant, tenant),
            )
        }
    )
    if renumber:
        base = _top_position(db, "main")
        db.execute("CREATE TEMP TABLE position_map (old INTEGER PRIMARY KEY, new INTEGER NOT NULL)")
        db.executemany(
            "INSERT INTO position_map VALUES (?, ?)", [(p, base + i + 1) for i, p in enumerate(positions)]
        )
    for table, position_columns in _TABLES.items():
        columns = [str(r[1]) for r in db.execute(f"PRAGMA main.table_info({table})")]
        select = []
        for column in columns:
            if renumber and column in position_columns and table == "cursors":
                # a cursor means "done through here": after renumbering, through the last row at or before it
                select.append(f"{base} + (SELECT COUNT(*) FROM position_map WHERE old <= s.position)")
            elif renumber and column in position_columns:
                select.append("(SELECT new FROM position_map WHERE old = s.position)")
            else:
                select.append(f"s.{column}")
        db.execute(
            f"INSERT INTO main.{table} ({', '.join(columns)}) SELECT {', '.join(select)}"
            f" FROM src.{table} AS s WHERE s.tenant = ?",
            (tenant,),
        )
    if renumber:
        db.execute("DROP TABLE temp.position_map")
    return int(db.execute("SELECT COUNT(*) FROM src.outbox WHERE tenant = ?", (tenant,)).fetchone()[0])


def _top_position(db: sqlite3.Connection, schema: str) -> int:
    """The highest position the database ever handed out that is still visible (rows, cursors, dead letters)."""
    row = db.execute(
        f"SELECT MAX(COALESCE((SELECT MAX(position) FROM {schema}.outbox), 0),"
        f" COALESCE((SELECT MAX(position) FROM {schema}.cursors), 0),"
        f" COALESCE((SELECT MAX(position) FROM {schema}.dead_letters), 0))"
    ).fetchone()
    return int(row[0])


def export_tenant(path: Path, tenant: str, out: Path) -> int:
    """Write the tenant's stored events as JSON Lines (one CloudEvent per line, in commit order)."""
    count = 0
    tmp = out.with_name(out.name + ".partial")
    with _connect(path) as db, tmp.open("wb") as fh:
        db.execute("PRAGMA query_only = ON")
        with transaction(db, immediate=False):  # one snapshot, while the gateway keeps writing
            rows = db.execute("SELECT body FROM outbox WHERE tenant = ? ORDER BY position", (tenant,))
            for (body,) in rows:
                fh.write(orjson.dumps(orjson.loads(body)) + b"\n")
                count += 1
    tmp.replace(out)
    return count


def erase_tenant(path: Path, tenant: str, *, whole_file: bool) -> int:
    """Delete everything stored for the tenant; `whole_file` for its own database. Returns events erased."""
    events = tenant_event_count(path, tenant)
    if whole_file:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return events
    with _connect(path) as db:
        db.execute("PRAGMA secure_delete = ON")  # deleted content is overwritten, not only unlinked
        with transaction(db):
            for table in _TABLES:
                db.execute(f"DELETE FROM {table} WHERE tenant = ?", (tenant,))
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # and no copy stays behind in the write-ahead log
    return events


def has_rows(path: Path, tenant: str) -> bool:
    """Whether `path` keeps anything (events, cursors, sequences...) for the tenant."""
    if not path.exists():
        return False
    with _connect(path) as db:
        return any(
            db.execute(f"SELECT 1 FROM {table} WHERE tenant = ? LIMIT 1", (tenant,)).fetchone() is not None
            for table in _TABLES
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone() is not None
        )
