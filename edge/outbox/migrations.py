"""Versioned SQLite schema of the outbox: `PRAGMA user_version`, forward migrations at open, a backup first.

Version 1 is the schema of release 0.1.0 (which did not set user_version: a database with the outbox table
and user_version 0 is version 1). Each later version is one entry of `STEPS`, applied in its own
transaction, after a copy of the database was taken with SQLite's online backup API into
`{db}.v{old}.bak` (kept: it is the way back if the new release has to be rolled back). A database newer than
this release is refused: an older gateway must not write a schema it does not know.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from edge.outbox import schema as sql
from edge.sdk.errors import EdgeError
from edge.sdk.transaction import transaction

__all__ = ["SCHEMA_VERSION", "STEPS", "SchemaTooNew", "backup_database", "migrate"]

log = logging.getLogger(__name__)

# STEPS[n] turns version n into n + 1.
STEPS: dict[int, str] = {
    # 0.2.0: a record of every schema change (which release applied it, when), for support and rollbacks.
    1: """
    CREATE TABLE IF NOT EXISTS schema_history (
        version     INTEGER PRIMARY KEY,
        applied_at  REAL NOT NULL,
        release     TEXT NOT NULL
    );
    """,
}
SCHEMA_VERSION = 1 + len(STEPS)


class SchemaTooNew(EdgeError):
    def __init__(self, path: Path, found: int) -> None:
        super().__init__(
            f"{path}: schema version {found} was written by a newer gateway (this one knows up to"
            f" {SCHEMA_VERSION}); upgrade the gateway, or restore the {path.name}.v*.bak copy the upgrade took"
        )


def backup_database(source: sqlite3.Connection, target: Path) -> None:
    """A consistent copy of a live database (SQLite online backup: other writers may keep writing)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    tmp.unlink(missing_ok=True)
    with sqlite3.connect(tmp) as copy:
        source.backup(copy)
    copy.close()
    tmp.replace(target)


def migrate(path: Path, release: str) -> int:
    """Bring the database at `path` to `SCHEMA_VERSION`; returns the version it had (0: a new database)."""
    db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    try:
        found = int(db.execute("PRAGMA user_version").fetchone()[0])
        has_outbox = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'outbox'").fetchone() is not None
        if found == 0 and not has_outbox:
            _create(db, release)
            return 0
        found = found or 1  # 0.1.0 never set user_version
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(path, found)
        if found < SCHEMA_VERSION:
            backup = path.with_name(f"{path.name}.v{found}.bak")
            backup_database(db, backup)
            log.warning(
                "%s: upgrading the schema from version %d to %d (copy kept in %s)",
                path,
                found,
                SCHEMA_VERSION,
                backup,
            )
            for version in range(found, SCHEMA_VERSION):
                _step(db, version, release)
        db.executescript(sql.SCHEMA)  # indexes and tables added without a version bump are idempotent
        return found
    finally:
        db.close()


def _create(db: sqlite3.Connection, release: str) -> None:
    with transaction(db):
        for statement in _statements(sql.SCHEMA + "".join(STEPS.values())):
            db.execute(statement)
        db.execute(
            "INSERT OR REPLACE INTO schema_history VALUES (?, strftime('%s','now'), ?)",
            (SCHEMA_VERSION, release),
        )
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _step(db: sqlite3.Connection, version: int, release: str) -> None:
    with transaction(db):
        for statement in _statements(STEPS[version]):
            db.execute(statement)
        db.execute(
            "INSERT OR REPLACE INTO schema_history VALUES (?, strftime('%s','now'), ?)",
            (version + 1, release),
        )
        db.execute(f"PRAGMA user_version = {version + 1}")


def _statements(script: str) -> list[str]:
    """Split a script of simple DDL statements (no triggers) so each runs inside our own transaction."""
    return [s.strip() for s in script.split(";") if s.strip()]
