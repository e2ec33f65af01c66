"""The SQLite backend of the outbox (the default): one file, a writer and a reader connection on threads of their
own (`SqliteThread`: a whole transaction, or a query with its fetch, is one hop).

WAL with `synchronous=FULL` by default, so a committed batch survives power loss. The process is the file's
only writer (the data directory's instance lock), so positions are numbered in memory. The contract itself
(group commit, cursors, dead letters, retention primitives) is `edge.outbox.store.GroupCommitOutbox`.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Unpack, cast

from edge.ops.files import private_database
from edge.outbox import Dropped
from edge.outbox import schema as sql
from edge.outbox.inspect import OutboxInspector
from edge.outbox.migrations import migrate
from edge.outbox.store import (
    DELETE_CHUNK,
    CommitBatch,
    GroupCommitOutbox,
    OutboxClock,
    Row,
    StoreOptions,
    first_since_search,
)
from edge.sdk.sqlite_thread import SqliteThread
from edge.sdk.transaction import transaction
from edge.version import __version__

_ROWS_PER_STATEMENT = 200  # ten values a row: well within SQLite's 32,766 bound variables (since 3.32)

__all__ = ["OutboxClock", "SqliteOutbox"]


class SqliteOutbox(GroupCommitOutbox):
    _sole_writer = True  # the gateway holds the file's instance lock; tools only read it or move cursors

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "full",
        busy_timeout: float = 5.0,
        **options: Unpack[StoreOptions],
    ) -> None:
        super().__init__(sql.SQLITE, **options)
        self.path = path
        self._synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self._writer: SqliteThread | None = None  # the file's only writer; one hop per transaction
        self._reader: SqliteThread | None = None

    @property
    def location(self) -> str:
        return str(self.path)

    def inspector(self, *, writable: bool = False) -> OutboxInspector:
        return OutboxInspector(self.path, writable=writable)

    async def _connect(self) -> None:
        private_database(self.path)
        await asyncio.to_thread(migrate, self.path, __version__)  # versioned schema, backup before upgrading
        self._writer = SqliteThread("outbox-writer")
        await self._writer.open(
            self.path,
            busy_timeout=self._busy_timeout,
            pragmas=("journal_mode=WAL", f"synchronous={self._synchronous}"),
        )
        self._reader = SqliteThread("outbox-reader")
        await self._reader.open(self.path, pragmas=("query_only=ON",))

    async def _disconnect(self) -> None:
        for db in (self._writer, self._reader):
            if db is not None:
                await db.close()
        self._writer = self._reader = None

    def _thread(self) -> SqliteThread:
        assert self._writer is not None, "outbox is not open"
        return self._writer

    async def _write_batch(self, batch: CommitBatch) -> int:
        first = self._next_position  # the file's only writer numbers its rows itself
        await self._thread().call(_commit_rows, first, batch)
        return first

    async def _write_statements(self, query: str, params: Sequence[Sequence[object]]) -> int:
        return await self._thread().call(_execute_many, query, params)

    async def _delete_chunk(
        self, tenant: str, position: int, delivered_through: int, reason: str | None
    ) -> tuple[int, int, int, Dropped]:
        clause, _ = sql.tenant_filter()  # here: the writer's thread does not carry the tenant context
        return await self._thread().call(
            _delete_chunk, clause, tenant, position, delivered_through, reason, self._clock()
        )

    async def _read(self, query: str, params: Sequence[object]) -> list[Row]:
        assert self._reader is not None, "outbox is not open"
        return await self._reader.rows(query, params)

    async def _search_first_since(self, query: str, tenant: str, enqueued: float) -> int | None:
        assert self._reader is not None, "outbox is not open"
        return await self._reader.call(_first_since, query, tenant, enqueued, self.last_position)


# ---- transactions, run whole on the writer's thread ----------------------------------------------------


def _commit_rows(db: sqlite3.Connection, first: int, batch: CommitBatch) -> None:
    """A group commit: the events, the devices' last sequences, the usage counters and the consumers'
    pending cursors and status, in one transaction (deferred: the writer is the file's only writer)."""
    with transaction(db, immediate=False):
        if batch.rows:
            _insert_many(db, sql.INSERT, [(first + offset, *row) for offset, row in enumerate(batch.rows)])
        if batch.sequences:
            _insert_many(db, sql.UPSERT_SEQUENCE, [(t, d, s) for (t, d), s in batch.sequences.items()])
        if batch.usage:
            _insert_many(db, sql.ADD_USAGE, [(t, n, b) for t, (n, b) in batch.usage.items()])
        if batch.cursors:
            _insert_many(db, sql.UPSERT_CURSOR, [(c, t, p) for (c, t), p in batch.cursors.items()])
        if batch.status:
            _insert_many(db, sql.UPSERT_STATUS, [(c, t, *v) for (c, t), v in batch.status.items()])


def _insert_many(db: sqlite3.Connection, statement: str, rows: Sequence[Sequence[object]]) -> None:
    """`executemany` as multi-row INSERTs (an upsert's conflicts are still handled row by row).

    sqlite3 lets go of the GIL for every statement step. Row by row, a commit on this thread while the event
    loop is busy (the poll round that made the rows) took the GIL back once per row, each time a wakeup of both
    threads; one step per chunk of rows takes it back once."""
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        db.execute(_multi_row(statement, len(chunk)), [value for row in chunk for value in row])


@functools.lru_cache(maxsize=256)
def _multi_row(statement: str, count: int) -> str:
    """`INSERT ... VALUES (?, ?) ...` with `count` groups of values instead of one."""
    head, _, tail = statement.partition(" VALUES (")
    group, _, rest = tail.partition(")")
    return f"{head} VALUES {','.join([f'({group})'] * count)}{rest}"


def _first_since(
    db: sqlite3.Connection, query: str, tenant: str, enqueued: float, last_position: int
) -> int | None:
    """`first_since_search` whole, in one read transaction (every probe sees the same rows)."""
    search = first_since_search(enqueued, last_position)
    with transaction(db, immediate=False):
        try:
            position = next(search)
            while True:
                row = db.execute(query, (tenant, position)).fetchone()
                position = search.send((int(row[0]), float(row[1])) if row else None)
        except StopIteration as done:
            return cast(int | None, done.value)


def _execute_many(db: sqlite3.Connection, query: str, params: Sequence[Sequence[object]]) -> int:
    with transaction(db, immediate=False):
        before = db.total_changes
        db.executemany(query, params)
        return db.total_changes - before


def _delete_chunk(
    db: sqlite3.Connection,
    clause: str,
    tenant: str,
    position: int,
    delivered_through: int,
    reason: str | None,
    now: float,
) -> tuple[int, int, int, Dropped]:
    where = f"{clause} AND position <= ?"
    rows: list[Any] = db.execute(
        f"SELECT position FROM outbox WHERE {where} ORDER BY position LIMIT 1 OFFSET ?",
        (tenant, position, DELETE_CHUNK - 1),
    ).fetchall()
    end = int(rows[0][0]) if rows else position
    with transaction(db, immediate=False):
        events, size = db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(length(body)), 0) FROM outbox WHERE {where}", (tenant, end)
        ).fetchone()
        lost = Dropped()
        if reason is not None and end > delivered_through:
            n, b, t0, t1, last = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(body)), 0), MIN(time), MAX(time),"
                f" COALESCE(MAX(position), 0) FROM outbox WHERE {where} AND position > ?",
                (tenant, end, delivered_through),
            ).fetchone()
            lost = Dropped(int(n), int(b), t0, t1, int(last))
        db.execute(f"DELETE FROM outbox WHERE {where}", (tenant, end))
        db.execute(
            "UPDATE tenant_usage SET events = events - ?, bytes = bytes - ? WHERE tenant = ?",
            (events, size, tenant),
        )
        if lost.events:
            db.execute(sql.ADD_DROPS, (tenant, reason, lost.events, lost.bytes, now))
    return end, int(events), int(size), lost
