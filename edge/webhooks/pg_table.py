"""Webhook subscriptions in the current tenant's PostgreSQL place (see tables.py); imported only when the outbox
is on PostgreSQL, so a gateway on SQLite never loads psycopg."""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql

from edge.outbox.postgres import PgPlace, pg_dialect, prepare_place
from edge.sdk.tenancy import current_tenant
from edge.sdk.transaction import transaction
from edge.webhooks.tables import STORED_COLUMNS, Executor

__all__ = ["PostgresTable"]

log = logging.getLogger(__name__)

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
                f"SELECT {STORED_COLUMNS} FROM webhook_subscriptions WHERE tenant = ?", (tenant,)
            ).fetchall()
        except sqlite3.OperationalError:  # no such table: nothing was ever kept there
            return
        if not found:
            return
        marks = ", ".join(["%s"] * len(STORED_COLUMNS.split(",")))
        with db.transaction():
            for row in found:
                db.execute(
                    f"INSERT INTO webhook_subscriptions ({STORED_COLUMNS}) VALUES ({marks}) ON CONFLICT (id) DO NOTHING",  # type: ignore[arg-type]
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
