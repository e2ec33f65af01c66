"""The PostgreSQL backend of the outbox (`[storage] backend = "postgresql"`), on psycopg 3's asyncio API.

One writer connection commits each group in one transaction (psycopg's `transaction()` returns only once the
server acknowledged COMMIT; with `synchronous_commit = on`, set on every connection for `synchronous =
"full"`, that is after the commit reached PostgreSQL's WAL on disk), so an acknowledged event survives a
kill -9 of the gateway and a crash of the server. Events go in with COPY. One reader connection in
autocommit mode runs each query as its own snapshot.

Where a store's rows live is a `PgPlace`: a database (conninfo), a schema, and for schema-per-tenant the
tenant's own role. Tiers (`edge.outbox.backends`): shared tables (schema `[storage.postgresql] schema`, the
tenant column filter), a schema per tenant (`{schema}_{tenant}`, owned by role `{schema}_{tenant}`: the
store's connections `SET ROLE` to it, so even a wrong query cannot reach another tenant's schema), or a
database per tenant (`{database}_{tenant}`, created on first use).

Positions come from `outbox_head` inside the committing transaction (`edge.outbox.pg_schema`): several
gateway processes may append to one store and their commits still appear in position order. Each commit also
NOTIFYs the store's channel with its tenants; a listening connection per store passes other processes'
commits to the wake listeners (the durable consumers), so a consumer in one instance reads another instance's
rows at once instead of after its idle wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Unpack

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from edge.outbox import Dropped, StorageUnavailable
from edge.outbox.inspect import OutboxInspector
from edge.outbox.pg_schema import POSTGRES, migrate
from edge.outbox.schema import tenant_filter
from edge.outbox.store import DELETE_CHUNK, CommitBatch, GroupCommitOutbox, Row, StoreOptions
from edge.sdk.backoff import Backoff
from edge.version import __version__

__all__ = [
    "AsyncConn",
    "PgPlace",
    "PostgresInspector",
    "PostgresOutbox",
    "StorageUnavailable",
    "open_session",
    "pg_dialect",
    "pg_identifier",
    "prepare_place",
]

log = logging.getLogger(__name__)

_MAX_IDENTIFIER = 63  # PostgreSQL truncates longer names silently: two tenants could meet in one schema
_COLUMNS = "position, id, tenant, type, subject, device, sequence, time, enqueued, body"

AsyncConn = psycopg.AsyncConnection[tuple[Any, ...]]


class _CursorTransaction:
    """The commit's open transaction, for a `CommitFence` (edge/cluster/fence.py)."""

    def __init__(self, cursor: psycopg.AsyncCursor[Any]) -> None:
        self._cursor = cursor

    async def rows(self, query: str, params: Sequence[object] = ()) -> list[Row]:
        await self._cursor.execute(pg_dialect(query), params)
        return list(await self._cursor.fetchall())


@lru_cache(maxsize=512)
def pg_dialect(query: str) -> str:
    """The outbox's `?` placeholders as psycopg's `%s` (a literal `%` doubled)."""
    return query.replace("%", "%%").replace("?", "%s")


def pg_identifier(prefix: str, name: str) -> str:
    """`{prefix}_{name}`, made unique and short enough when it would exceed PostgreSQL's 63 bytes."""
    full = f"{prefix}_{name}"
    if len(full.encode()) <= _MAX_IDENTIFIER:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{full.encode()[: _MAX_IDENTIFIER - 13].decode(errors='ignore')}_{digest}"


@dataclass(frozen=True, slots=True)
class PgPlace:
    """Where one store's tables are: `conninfo` (a DSN without the password), `schema`, and `role` (the
    tenant's own role for schema-per-tenant, else None: the DSN's user)."""

    conninfo: str
    password: str | None
    schema: str
    role: str | None = None
    synchronous: str = "full"

    def connect_kwargs(self) -> dict[str, Any]:
        return {"password": self.password} if self.password else {}

    def describe(self) -> str:
        info = conninfo_to_dict(self.conninfo)
        host, db = info.get("host", "localhost"), info.get("dbname", info.get("user", ""))
        return f"postgresql://{host}:{info.get('port', 5432)}/{db} schema {self.schema}"

    def database(self, dbname: str) -> PgPlace:
        """The same server and credentials, another database."""
        return PgPlace(
            make_conninfo(self.conninfo, dbname=dbname),
            self.password,
            self.schema,
            self.role,
            self.synchronous,
        )

    @property
    def dbname(self) -> str:
        info = conninfo_to_dict(self.conninfo)
        return str(info.get("dbname") or info.get("user") or "postgres")


async def _session(db: AsyncConn, place: PgPlace) -> None:
    """Per connection: durability of COMMIT, the tenant's role, and the schema every query names implicitly."""
    commit = "on" if place.synchronous == "full" else "off"
    await db.execute(f"SET synchronous_commit = {commit}")
    if place.role is not None:
        await db.execute(pgsql.SQL("SET ROLE {}").format(pgsql.Identifier(place.role)))
    await db.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(place.schema)))


async def open_session(place: PgPlace) -> AsyncConn:
    """A connection in autocommit mode, set up for `place` (see `_session`)."""
    db = await psycopg.AsyncConnection.connect(place.conninfo, autocommit=True, **place.connect_kwargs())
    await _session(db, place)
    return db


async def prepare_place(place: PgPlace, release: str = __version__) -> int:
    """Create what `place` needs (its database, its role, its schema) and migrate the schema; returns the
    version the schema had (0: created now)."""
    await _ensure_database(place)
    async with await psycopg.AsyncConnection.connect(
        place.conninfo, autocommit=True, **place.connect_kwargs()
    ) as db:
        if place.role is not None:
            await _ensure_role(db, place.role, place.schema)
            await db.execute(pgsql.SQL("SET ROLE {}").format(pgsql.Identifier(place.role)))
        return await migrate(db, place.schema, release)


async def _ensure_database(place: PgPlace) -> None:
    """A database-per-tenant store's database, created through the server's maintenance database."""
    try:
        async with await psycopg.AsyncConnection.connect(place.conninfo, **place.connect_kwargs()):
            return
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
    async with await psycopg.AsyncConnection.connect(
        make_conninfo(place.conninfo, dbname="postgres"), autocommit=True, **place.connect_kwargs()
    ) as admin:
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # another instance created it meanwhile
            await admin.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(place.dbname)))


async def _ensure_role(db: AsyncConn, role: str, schema: str) -> None:
    """The tenant's role (no login) owning its schema; the gateway's user may act as it (SET ROLE).
    Created here unless an administrator created it beforehand (then no CREATEROLE right is needed)."""
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"edge-role:{role}",))
        cursor = await db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        if await cursor.fetchone() is None:
            await db.execute(pgsql.SQL("CREATE ROLE {} NOLOGIN").format(pgsql.Identifier(role)))
            await db.execute(pgsql.SQL("GRANT {} TO CURRENT_USER").format(pgsql.Identifier(role)))
        await db.execute(
            pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(
                pgsql.Identifier(schema), pgsql.Identifier(role)
            )
        )


class PostgresOutbox(GroupCommitOutbox):
    def __init__(self, place: PgPlace, **options: Unpack[StoreOptions]) -> None:
        super().__init__(POSTGRES, **options)
        self.place = place
        self._writer: AsyncConn | None = None
        self._reader: AsyncConn | None = None
        self._channel = f"edge_outbox:{place.schema}"  # per database: one channel per store
        self._listener: asyncio.Task[None] | None = None

    @property
    def location(self) -> str:
        return self.place.describe()

    def inspector(self, *, writable: bool = False) -> OutboxInspector:
        return PostgresInspector(self.place, writable=writable)

    async def _connect(self) -> None:
        try:
            await prepare_place(self.place)
            self._writer = await self._open_connection()
            self._reader = await self._open_connection()
        except psycopg.OperationalError as exc:  # the server is down, refuses the login, or is out of reach
            raise StorageUnavailable(f"cannot reach the outbox at {self.place.describe()}: {exc}") from None
        self._listener = asyncio.create_task(self._listen(), name="outbox-listen")

    async def _listen(self) -> None:
        """Wake-ups from other processes' commits to this store, while it is open; a lost session is opened
        again (commits missed meanwhile cost the consumers at most their idle wait)."""
        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                db = await open_session(self.place)
                try:
                    await db.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(self._channel)))
                    backoff.reset()
                    async for note in db.notifies():
                        self._woken(note.pid, note.payload)
                finally:
                    with contextlib.suppress(psycopg.Error):
                        await db.close()
            except psycopg.Error as exc:
                log.debug("outbox wake-ups from %s paused: %s", self.place.describe(), exc)
            await asyncio.sleep(backoff.next_delay())

    def _woken(self, sender: int, payload: str) -> None:
        writer = self._writer
        if writer is not None and not writer.closed and sender == writer.info.backend_pid:
            return  # our own commit: its listeners were told already
        tenants = payload.split(",")
        for listener in self._wake_listeners:
            listener(tenants)

    async def _open_connection(self) -> AsyncConn:
        return await open_session(self.place)

    async def _disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        connections, self._writer, self._reader = (self._writer, self._reader), None, None
        for db in connections:
            if db is not None:
                with contextlib.suppress(psycopg.Error):  # a server that is gone must not stop the shutdown
                    await db.close()

    async def _writable(self) -> AsyncConn:
        """The writer connection, opened again after the server restarted or the network dropped it (the
        failed batch is retried by the writer loop, so nothing appended is lost meanwhile)."""
        if self._writer is None or self._writer.closed or self._writer.broken:
            if self._writer is not None:
                await self._writer.close()
            self._writer = await self._open_connection()
        return self._writer

    async def _write_batch(self, batch: CommitBatch) -> int:
        db = await self._writable()
        sql = self._sql
        async with db.transaction(), db.cursor() as cursor:
            if batch.fenced is not None:  # cluster mode: drop the events of devices whose leases are lost
                batch = await batch.fenced(_CursorTransaction(cursor))
            first = 0
            if batch.rows:
                # the row lock on outbox_head orders concurrent writers until COMMIT: positions in commit order
                count = len(batch.rows)
                await cursor.execute("UPDATE outbox_head SET last = last + %s RETURNING last", (count,))
                (last,) = await cursor.fetchone() or (count,)
                first = int(last) - count + 1
                async with cursor.copy(f"COPY outbox ({_COLUMNS}) FROM STDIN") as copy:
                    for offset, row in enumerate(batch.rows):
                        await copy.write_row((first + offset, *row))
                # delivered by PostgreSQL only once the transaction commits (never for a rolled-back one)
                await cursor.execute(
                    "SELECT pg_notify(%s, %s)", (self._channel, ",".join(sorted(batch.usage)))
                )
            for query, params in (
                (sql.upsert_sequence, [(t, d, q) for (t, d), q in batch.sequences.items()]),
                (sql.add_usage, [(t, n, b) for t, (n, b) in batch.usage.items()]),
                (sql.upsert_cursor, [(c, t, p) for (c, t), p in batch.cursors.items()]),
                (sql.upsert_status, [(c, t, *v) for (c, t), v in batch.status.items()]),
            ):
                if params:
                    await cursor.executemany(pg_dialect(query), params)
        return first

    async def _write_statements(self, query: str, params: Sequence[Sequence[object]]) -> int:
        db = await self._writable()
        changed = 0
        async with db.transaction(), db.cursor() as cursor:
            for one in params:
                await cursor.execute(pg_dialect(query), one)
                changed += max(0, cursor.rowcount)
        return changed

    async def _delete_chunk(
        self, tenant: str, position: int, delivered_through: int, reason: str | None
    ) -> tuple[int, int, int, Dropped]:
        clause, _ = tenant_filter()
        db = await self._writable()
        async with db.transaction():
            # one statement: pick the chunk, delete it, and measure what went (all of it, and the undelivered)
            cursor = await db.execute(
                pg_dialect(
                    f"WITH chunk AS (SELECT position FROM outbox WHERE {clause} AND position <= ?"
                    " ORDER BY position LIMIT ?),"
                    " gone AS (DELETE FROM outbox o USING chunk c WHERE o.position = c.position"
                    " RETURNING o.position, length(o.body) AS size, o.time)"
                    " SELECT COALESCE(MAX(position), ?), COUNT(*), COALESCE(SUM(size), 0),"
                    " COUNT(*) FILTER (WHERE position > ?), COALESCE(SUM(size) FILTER (WHERE position > ?), 0),"
                    " MIN(time) FILTER (WHERE position > ?), MAX(time) FILTER (WHERE position > ?),"
                    " COALESCE(MAX(position) FILTER (WHERE position > ?), 0) FROM gone"
                ),
                (tenant, position, DELETE_CHUNK, position, *[delivered_through] * 5),
            )
            end, events, size, n, b, t0, t1, last = await cursor.fetchone() or (
                position,
                0,
                0,
                0,
                0,
                None,
                None,
                0,
            )
            if not events:
                end = position
            await db.execute(
                pg_dialect("UPDATE tenant_usage SET events = events - ?, bytes = bytes - ? WHERE tenant = ?"),
                (events, size, tenant),
            )
            lost = Dropped(int(n), int(b), t0, t1, int(last)) if reason is not None else Dropped()
            if lost.events:
                await db.execute(
                    pg_dialect(self._sql.add_drops), (tenant, reason, lost.events, lost.bytes, self._clock())
                )
        return int(end), int(events), int(size), lost

    async def _read(self, query: str, params: Sequence[object]) -> list[Row]:
        """Reads are idempotent: a connection the server ended (restart, failover) is reopened and the
        query asked once more."""
        try:
            return await self._query(query, params)
        except psycopg.OperationalError:
            if self._reader is None or not self._reader.broken:
                raise
            return await self._query(query, params)

    async def _query(self, query: str, params: Sequence[object]) -> list[Row]:
        if self._reader is None or self._reader.closed or self._reader.broken:
            if self._reader is not None:
                await self._reader.close()
            self._reader = await self._open_connection()
        cursor = await self._reader.execute(pg_dialect(query), params)
        return list(await cursor.fetchall())


class PostgresInspector(OutboxInspector):
    """The PostgreSQL outbox seen from outside (`edge sync status`, /v1/sync): one blocking connection."""

    _statements = POSTGRES

    def __init__(self, place: PgPlace, *, writable: bool = False) -> None:
        """Raises ConnectionError (naming the server and schema, never the password) when it cannot connect."""
        try:
            self._pg = psycopg.connect(place.conninfo, autocommit=True, **place.connect_kwargs())
        except psycopg.OperationalError as exc:
            raise ConnectionError(f"cannot reach the outbox at {place.describe()}: {exc}") from None
        if place.role is not None:
            self._pg.execute(pgsql.SQL("SET ROLE {}").format(pgsql.Identifier(place.role)))
        self._pg.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(place.schema)))
        if not writable:
            self._pg.execute("SET default_transaction_read_only = on")

    def close(self) -> None:
        self._pg.close()

    def _rows(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return list(self._pg.execute(pg_dialect(query), params).fetchall())
        except psycopg.errors.UndefinedTable:  # the gateway has not created the schema yet: nothing recorded
            return []

    def _execute(self, query: str, params: tuple[Any, ...]) -> int:
        return max(0, self._pg.execute(pg_dialect(query), params).rowcount)
