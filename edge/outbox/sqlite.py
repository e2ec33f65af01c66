"""The SQLite backend of the outbox (the default): one file, one writer connection, one reader connection.

WAL with `synchronous=FULL` by default, so a committed batch survives power loss. The process is the file's
only writer (the data directory's instance lock), so positions are numbered in memory. The contract itself
(group commit, cursors, dead letters, retention primitives) is `edge.outbox.store.GroupCommitOutbox`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Unpack

import aiosqlite

from edge.ops.files import private_database
from edge.outbox.inspect import OutboxInspector
from edge.outbox.migrations import migrate
from edge.outbox.schema import SQLITE
from edge.outbox.store import GroupCommitOutbox, OutboxClock, Row, StoreOptions, Transaction
from edge.sdk.transaction import async_transaction
from edge.version import __version__

__all__ = ["OutboxClock", "SqliteOutbox"]


class _SqliteTransaction:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, query: str, params: Sequence[object] = ()) -> int:
        async with self._db.execute(query, params) as cursor:
            return int(cursor.rowcount)

    async def executemany(self, query: str, params: Sequence[Sequence[object]]) -> None:
        await self._db.executemany(query, params)

    async def rows(self, query: str, params: Sequence[object] = ()) -> list[Row]:
        async with self._db.execute(query, params) as cursor:
            return [tuple(r) for r in await cursor.fetchall()]


class SqliteOutbox(GroupCommitOutbox):
    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "full",
        busy_timeout: float = 5.0,
        **options: Unpack[StoreOptions],
    ) -> None:
        super().__init__(SQLITE, **options)
        self.path = path
        self._synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None

    @property
    def location(self) -> str:
        return str(self.path)

    def inspector(self, *, writable: bool = False) -> OutboxInspector:
        return OutboxInspector(self.path, writable=writable)

    async def _connect(self) -> None:
        private_database(self.path)
        await asyncio.to_thread(migrate, self.path, __version__)  # versioned schema, backup before upgrading
        self._writer = await aiosqlite.connect(self.path, isolation_level=None, timeout=self._busy_timeout)
        await self._writer.execute("PRAGMA journal_mode=WAL")
        await self._writer.execute(f"PRAGMA synchronous={self._synchronous}")
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        await self._reader.execute("PRAGMA query_only=ON")

    async def _disconnect(self) -> None:
        for db in (self._writer, self._reader):
            if db is not None:
                await db.close()
        self._writer = self._reader = None

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[Transaction]:
        assert self._writer is not None, "outbox is not open"
        async with async_transaction(self._writer, immediate=False) as db:  # the file's only writer
            yield _SqliteTransaction(db)

    async def _announce(self, tx: Transaction, tenants: Iterable[str]) -> None:
        """Nobody else writes the file (the data directory's instance lock): no other process to tell."""

    async def _read(self, query: str, params: Sequence[object]) -> list[Row]:
        assert self._reader is not None, "outbox is not open"
        return [tuple(r) for r in await self._reader.execute_fetchall(query, params)]
