"""Where webhook subscriptions are kept: the gateway's SQLite file, or PostgreSQL beside the tenant's outbox.

`WebhookStore` writes its statements once (SQLite's `?` placeholders, the tenant filter) and runs them on a
`SubscriptionTable`:

- `SqliteTable`: the table in the gateway's SQLite file (the outbox's file when the outbox is on SQLite), as
  always for one box;
- `PostgresTable`: the table in the current tenant's own PostgreSQL place (the shared schema, the tenant's
  schema under its role, or its database: `edge.outbox.backends.pg_place`), so every instance of a cluster on
  one PostgreSQL sees the same subscriptions, and a dedicated tenant's URLs and secrets stay in its schema.
  Subscriptions a gateway kept in its SQLite file before its storage moved to PostgreSQL are moved over once
  (each instance's own file, in cluster mode), then deleted from the file.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg import sql as pgsql

from edge.ops.files import private_database
from edge.outbox import schema as outbox_sql
from edge.outbox.postgres import PgPlace, pg_dialect, prepare_place
from edge.sdk.tenancy import current_tenant
from edge.sdk.transaction import transaction

__all__ = ["COLUMNS", "PostgresTable", "SqliteTable", "SubscriptionTable"]

log = logging.getLogger(__name__)

COLUMNS = "id, tenant, url, types, sites, devices, points, state, state_reason, created, updated"
_ALL = f"{COLUMNS}, secret, old_secret, old_until"

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

_POSTGRES = """
CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    id            text PRIMARY KEY,
    tenant        text NOT NULL,
    url           text NOT NULL,
    types         text NOT NULL,
    sites         text NOT NULL,
    devices       text NOT NULL,
    points        text NOT NULL,
    secret        text NOT NULL,
    old_secret    text,
    old_until     double precision,
    state         text NOT NULL,
    state_reason  text,
    created       double precision NOT NULL,
    updated       double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_subscriptions_tenant ON webhook_subscriptions(tenant)
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


class PostgresTable:
    """The table in the current tenant's PostgreSQL place: one blocking connection per place, opened on first
    use (and the place prepared, if no gateway ever ran on it), the table created there if missing."""

    def __init__(self, place_of: Callable[[str], PgPlace], legacy: Path | None = None) -> None:
        """`place_of`: where a tenant's rows are; `legacy`: the SQLite file that kept subscriptions before."""
        self._place_of = place_of
        self._legacy = legacy
        self._connections: dict[PgPlace, psycopg.Connection[tuple[Any, ...]]] = {}
        self._lock = threading.Lock()
        self._moved: set[str] = set()  # tenants whose subscriptions in `legacy` were looked for

    def rows(self, query: str, params: tuple[Any, ...]) -> builtins.list[tuple[Any, ...]]:
        with self._lock:
            return list(self._connection().execute(pg_dialect(query), params).fetchall())

    @contextmanager
    def transaction(self) -> Iterator[Executor]:
        with self._lock:
            db = self._connection()
            with db.transaction():
                yield lambda query, params: db.execute(pg_dialect(query), params)

    def ready(self) -> None:
        """Prepare the current tenant's place (its outbox's tables too, if no gateway ever ran on it)."""
        with self._lock:
            self._connection()

    def close(self) -> None:
        with self._lock:
            for db in self._connections.values():
                db.close()
            self._connections.clear()

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        tenant = current_tenant().tenant_id
        place = self._place_of(tenant)
        db = self._connections.get(place)
        if db is None or db.closed:
            db = self._connections[place] = _open(place)
        if self._legacy is not None and tenant not in self._moved:
            _move_legacy(self._legacy, db, place, tenant)
            self._moved.add(tenant)
        return db


def _open(place: PgPlace) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection to `place` with the subscriptions' table there; raises ConnectionError naming the place."""
    try:
        db = _connect(place)
    except ConnectionError:  # a tenant's own database is created on first use: by the gateway, or here
        try:
            _prepare(place)
        except (psycopg.Error, OSError) as exc:
            raise ConnectionError(
                f"cannot prepare the webhook subscriptions at {place.describe()}: {exc}"
            ) from None
        db = _connect(place)
    if place.role is not None:
        db.execute(pgsql.SQL("SET ROLE {}").format(pgsql.Identifier(place.role)))
    db.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(place.schema)))
    (outbox,) = db.execute("SELECT to_regclass('outbox') IS NOT NULL").fetchone() or (False,)
    if not outbox:  # `edge webhook add` before any gateway ran: its cursor needs the outbox's tables
        _prepare(place)
    with db.transaction():  # instances starting together would race on CREATE ... IF NOT EXISTS
        db.execute("SELECT pg_advisory_xact_lock(hashtext('edge.webhook_subscriptions'))")
        for statement in _POSTGRES.split(";\n"):
            db.execute(statement)  # type: ignore[call-overload]  # our own constant text
    return db


def _connect(place: PgPlace) -> psycopg.Connection[tuple[Any, ...]]:
    try:
        return psycopg.connect(place.conninfo, autocommit=True, **place.connect_kwargs())
    except psycopg.OperationalError as exc:
        raise ConnectionError(
            f"cannot reach the webhook subscriptions at {place.describe()}: {exc}"
        ) from None


def _prepare(place: PgPlace) -> None:
    """`prepare_place` from blocking code, also when called inside a running event loop (its own thread)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, prepare_place(place)).result(timeout=60)


def _move_legacy(path: Path, db: psycopg.Connection[tuple[Any, ...]], place: PgPlace, tenant: str) -> None:
    """Move `tenant`'s subscriptions from the SQLite file that kept them to PostgreSQL: inserted (an id already
    there is kept as it is), committed, then deleted from the file; a crash in between moves them again."""
    if not path.exists():
        return
    old = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        try:
            found = old.execute(
                f"SELECT {_ALL} FROM webhook_subscriptions WHERE tenant = ?", (tenant,)
            ).fetchall()
        except sqlite3.OperationalError:  # no such table: nothing was ever kept there
            return
        if not found:
            return
        marks = ", ".join(["%s"] * len(_ALL.split(",")))
        with db.transaction():
            for row in found:
                db.execute(
                    f"INSERT INTO webhook_subscriptions ({_ALL}) VALUES ({marks}) ON CONFLICT (id) DO NOTHING",  # type: ignore[arg-type]
                    row,
                )
        with transaction(old):
            old.execute("DELETE FROM webhook_subscriptions WHERE tenant = ?", (tenant,))
        log.warning(
            "moved %d webhook subscription(s) of tenant %s from %s to PostgreSQL (%s)",
            len(found),
            tenant,
            path,
            place.describe(),
        )
    finally:
        old.close()
