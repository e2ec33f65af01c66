"""The SQLite outbox: the gateway's only durability point.

One writer task group-commits appended events (WAL, `synchronous=FULL` by default, so a committed batch
survives power loss) and only then tells its listeners, which publish. Consumers (the MQTT publisher, modules,
cloud sync) read forward from their own durable cursor, so anyone who missed messages is replayed from here.

Every tenant-owned read goes through `_tenant_filter`, the one place that turns the current tenant context
into a WHERE clause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from edge.backoff import Backoff
from edge.errors import NoTenantContext
from edge.events import Event
from edge.storage import CommitListener, StoredEvent
from edge.tenancy import current_tenant

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    position  INTEGER PRIMARY KEY,
    id        TEXT NOT NULL,
    tenant    TEXT NOT NULL,
    type      TEXT NOT NULL,
    subject   TEXT NOT NULL,
    device    TEXT,
    sequence  INTEGER,
    time      REAL NOT NULL,
    enqueued  REAL NOT NULL,
    body      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_tenant ON outbox(tenant);
CREATE TABLE IF NOT EXISTS cursors (
    consumer  TEXT NOT NULL,
    tenant    TEXT NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (consumer, tenant)
);
CREATE TABLE IF NOT EXISTS device_sequences (
    tenant    TEXT NOT NULL,
    device    TEXT NOT NULL,
    last      INTEGER NOT NULL,
    PRIMARY KEY (tenant, device)
);
"""

_INSERT = (
    "INSERT INTO outbox (position, id, tenant, type, subject, device, sequence, time, enqueued, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_SEQUENCE = (
    "INSERT INTO device_sequences (tenant, device, last) VALUES (?, ?, ?)"
    " ON CONFLICT (tenant, device) DO UPDATE SET last = MAX(last, excluded.last)"
)
_UPSERT_CURSOR = (
    "INSERT INTO cursors (consumer, tenant, position) VALUES (?, ?, ?)"
    " ON CONFLICT (consumer, tenant) DO UPDATE SET position = MAX(position, excluded.position)"
)
_CURSOR_FLUSH_INTERVAL = 0.2  # seconds an idle writer waits before persisting consumer cursors on their own
_COLUMNS = "position, id, tenant, type, subject, device, sequence, time, body"


def _tenant_filter() -> tuple[str, str]:
    """The only tenant filter of the outbox: raises NoTenantContext outside a tenant scope."""
    return "tenant = ?", current_tenant().tenant_id


def _check_owner(event: Event) -> None:
    """Tenant data is written only inside its own tenant's context."""
    tenant = current_tenant().tenant_id
    if event.tenant != tenant:
        raise NoTenantContext(f"event for tenant {event.tenant!r} written in the context of {tenant!r}")


class SqliteOutbox:
    def __init__(
        self,
        path: Path,
        *,
        commit_interval: float = 0.01,
        commit_max_events: int = 1000,
        synchronous: str = "full",
        queue_size: int = 20_000,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = path
        self._commit_interval = commit_interval
        self._commit_max = commit_max_events
        self._synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self._queue: asyncio.Queue[tuple[Event, asyncio.Future[int] | None]] = asyncio.Queue(queue_size)
        self._listeners: list[CommitListener] = []
        self._pending_cursors: dict[tuple[str, str], int] = {}
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_position = 1
        self.committed_events = 0
        self.commits = 0
        self.commit_failures = 0
        self.last_position = 0

    # ---- lifecycle -------------------------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await aiosqlite.connect(self.path, isolation_level=None, timeout=self._busy_timeout)
        await self._writer.execute("PRAGMA journal_mode=WAL")
        await self._writer.execute(f"PRAGMA synchronous={self._synchronous}")
        await self._writer.executescript(_SCHEMA)
        async with self._writer.execute("SELECT COALESCE(MAX(position), 0) FROM outbox") as cur:
            row = await cur.fetchone()
        self.last_position = int(row[0]) if row else 0
        self._next_position = self.last_position + 1
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        await self._reader.execute("PRAGMA query_only=ON")
        self._task = asyncio.create_task(self._write_loop(), name="outbox-writer")

    async def close(self) -> None:
        """Commit everything already appended, then close."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._writer is not None:
            await self._flush_cursors()
            await self._writer.close()
            self._writer = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    # ---- writing ---------------------------------------------------------------------------------------

    async def append(self, event: Event) -> None:
        _check_owner(event)
        await self._queue.put((event, None))

    async def append_durable(self, event: Event) -> int:
        _check_owner(event)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._queue.put((event, done))
        return await done

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                first = await asyncio.wait_for(self._queue.get(), _CURSOR_FLUSH_INTERVAL)
            except TimeoutError:
                await self._flush_cursors()  # idle: persist consumer progress on its own
                continue
            batch = [first]
            deadline = loop.time() + self._commit_interval
            while len(batch) < self._commit_max:
                if self._queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                    except TimeoutError:
                        break
                else:
                    batch.append(self._queue.get_nowait())
            await self._commit_until_done(batch)
            for _ in batch:
                self._queue.task_done()

    async def _commit_until_done(self, batch: list[tuple[Event, asyncio.Future[int] | None]]) -> None:
        """Commit a batch, retrying for as long as the disk refuses it: appended events are never dropped.

        Meanwhile the bounded queue fills up and `append` blocks, which slows the producers down."""
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                await self._commit(batch)
            except Exception as exc:  # disk full, I/O error, locked file: keep the batch and try again
                self.commit_failures += 1
                if backoff.attempts == 0:
                    log.error(
                        "outbox commit of %d events failed: %r; retrying until it succeeds", len(batch), exc
                    )
                await asyncio.sleep(backoff.next_delay())
                continue
            if backoff.attempts:
                log.warning("outbox commits succeed again after %d failed attempts", backoff.attempts)
            return

    async def _commit(self, batch: list[tuple[Event, asyncio.Future[int] | None]]) -> None:
        assert self._writer is not None
        now = time.time()
        first = self._next_position
        rows = []
        sequences: dict[tuple[str, str], int] = {}
        for offset, (e, _) in enumerate(batch):
            rows.append(
                (first + offset, e.id, e.tenant, e.type, e.subject, e.device, e.sequence, e.time, now, e.body)
            )
            if e.device is not None and e.sequence is not None:
                sequences[(e.tenant, e.device)] = e.sequence
        cursors, self._pending_cursors = self._pending_cursors, {}
        await self._writer.execute("BEGIN")
        try:
            await self._writer.executemany(_INSERT, rows)
            await self._writer.executemany(_UPSERT_SEQUENCE, [(t, d, s) for (t, d), s in sequences.items()])
            if cursors:
                await self._writer.executemany(_UPSERT_CURSOR, [(c, t, p) for (c, t), p in cursors.items()])
            await self._writer.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                await self._writer.execute("ROLLBACK")
            self._restore_cursors(cursors)
            raise
        self._next_position = first + len(batch)
        self.last_position = self._next_position - 1
        self.commits += 1
        self.committed_events += len(batch)
        for offset, (_, waiter) in enumerate(batch):
            if waiter is not None and not waiter.done():
                waiter.set_result(first + offset)
        events = [e for e, _ in batch]
        for listener in self._listeners:
            listener(events, self.last_position)

    def _restore_cursors(self, cursors: dict[tuple[str, str], int]) -> None:
        for key, position in cursors.items():  # keep them for the next commit
            self._pending_cursors[key] = max(position, self._pending_cursors.get(key, 0))

    # ---- cursors and sequences -------------------------------------------------------------------------

    def set_cursor(self, consumer: str, position: int) -> None:
        """Record that `consumer` is done up to `position` for the current tenant; persisted with the next commit."""
        key = (consumer, current_tenant().tenant_id)
        if position > self._pending_cursors.get(key, 0):
            self._pending_cursors[key] = position

    async def _flush_cursors(self) -> None:
        if not self._pending_cursors or self._writer is None:
            return
        cursors, self._pending_cursors = self._pending_cursors, {}
        try:
            await self._writer.execute("BEGIN")
            await self._writer.executemany(_UPSERT_CURSOR, [(c, t, p) for (c, t), p in cursors.items()])
            await self._writer.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                await self._writer.execute("ROLLBACK")
            self._restore_cursors(cursors)
            log.warning("saving consumer cursors failed (%s); will retry", exc)

    async def cursor(self, consumer: str) -> int:
        clause, tenant = _tenant_filter()
        pending = self._pending_cursors.get((consumer, tenant))
        rows = await self._read(
            f"SELECT position FROM cursors WHERE consumer = ? AND {clause}", (consumer, tenant)
        )
        stored = int(rows[0][0]) if rows else 0
        return max(stored, pending or 0)

    async def last_sequences(self) -> dict[tuple[str, str], int]:
        """Kernel-internal: the last committed sequence of every device, to continue numbering after a restart."""
        rows = await self._read("SELECT tenant, device, last FROM device_sequences", ())
        return {(str(t), str(d)): int(s) for t, d, s in rows}

    # ---- tenant-scoped reads ---------------------------------------------------------------------------

    async def read_after(
        self, position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[StoredEvent]:
        clause, tenant = _tenant_filter()
        sql = f"SELECT {_COLUMNS} FROM outbox WHERE {clause} AND position > ?"
        params: list[object] = [tenant, position]
        if types:
            sql += f" AND type IN ({','.join('?' * len(types))})"
            params += list(types)
        sql += " ORDER BY position LIMIT ?"
        params.append(limit)
        rows = await self._read(sql, params)
        return [StoredEvent(*row) for row in rows]

    async def backlog(self, consumer: str) -> int:
        position = await self.cursor(consumer)
        clause, tenant = _tenant_filter()
        rows = await self._read(
            f"SELECT COUNT(*) FROM outbox WHERE {clause} AND position > ?", (tenant, position)
        )
        return int(rows[0][0])

    async def count(self) -> int:
        clause, tenant = _tenant_filter()
        rows = await self._read(f"SELECT COUNT(*) FROM outbox WHERE {clause}", (tenant,))
        return int(rows[0][0])

    async def _read(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        assert self._reader is not None, "outbox is not open"
        async with self._reader.execute(sql, params) as cur:
            return [tuple(r) for r in await cur.fetchall()]
