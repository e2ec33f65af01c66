"""Where webhook subscriptions are kept: the gateway's SQLite file, or PostgreSQL beside the tenant's outbox.

`WebhookStore` writes its statements once (SQLite's `?` placeholders, the tenant filter) and runs them on a
`SubscriptionTable`:

- `SqliteTable`: the table in the gateway's SQLite file (the outbox's file when the outbox is on SQLite), as
  always for one box;
- `PostgresTable` (pg_table.py, so psycopg loads only with a PostgreSQL outbox): the table in the current tenant's own PostgreSQL place (the shared schema, the tenant's
  schema under its role, or its database: `edge.outbox.backends.pg_place`), so every instance of a cluster on
  one PostgreSQL sees the same subscriptions, and a dedicated tenant's URLs and secrets stay in its schema.
  Subscriptions a gateway kept in its SQLite file before its storage moved to PostgreSQL are moved over once
  (each instance's own file, in cluster mode), then deleted from the file.
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from edge.ops.files import private_database
from edge.outbox import schema as outbox_sql
from edge.sdk.transaction import transaction

__all__ = ["COLUMNS", "STORED_COLUMNS", "SqliteTable", "SubscriptionTable"]

COLUMNS = "id, tenant, url, types, sites, devices, points, state, state_reason, created, updated"
STORED_COLUMNS = f"{COLUMNS}, secret, old_secret, old_until"  # every column, secrets too

_SQLITE = """
CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    url           TEXT NOT NULL,
    types         TEXT NOT NULL,
    sites         TEXT NOT NULL,
    devices       TEXT NOT NULL,
    points        TEXT NOT NULL,
    secret        TEXT NOT NULL,
    old_secret    TEXT,             -- after a rotation: still signed with until old_until
    old_until     REAL,
    state         TEXT NOT NULL,
    state_reason  TEXT,
    created       REAL NOT NULL,
    updated       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_subscriptions_tenant ON webhook_subscriptions(tenant);
"""


class Cursor(Protocol):
    """What a statement returns on either database (sqlite3 and psycopg cursors both are this)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...


class Executor(Protocol):
    def __call__(self, query: str, params: tuple[Any, ...], /) -> Cursor: ...


class SubscriptionTable(Protocol):
    """The subscriptions' table of the current tenant; statements use `?` placeholders."""

    def rows(self, query: str, params: tuple[Any, ...]) -> builtins.list[tuple[Any, ...]]: ...

    def transaction(self) -> AbstractContextManager[Executor]: ...

    def close(self) -> None: ...


class SqliteTable:
    """The table in a SQLite file; one connection, its own lock (the store is called from threads)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(
            private_database(path), timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(outbox_sql.SCHEMA + _SQLITE)  # the CLI may run before the gateway ever did

    def rows(self, query: str, params: tuple[Any, ...]) -> builtins.list[tuple[Any, ...]]:
        with self._lock:
            return [tuple(r) for r in self._db.execute(query, params).fetchall()]

    @contextmanager
    def transaction(self) -> Iterator[Executor]:
        """BEGIN IMMEDIATE .. COMMIT (ROLLBACK on error) under the table's lock."""
        with self._lock, transaction(self._db):
            yield self._db.execute

    def close(self) -> None:
        with self._lock:
            self._db.close()
