"""One SQLite connection on a thread of its own, driven from asyncio one whole function at a time.

aiosqlite hops to its thread and back for every statement: an outbox commit (BEGIN, three inserts, the
cursors, COMMIT) was six hops, each a wake-up of two threads and a GIL hand-over. Here the caller hands the
thread a plain function of the `sqlite3.Connection` and awaits its result, so a whole transaction or a query
with its fetch costs one hop. Only that thread ever touches the connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["SqliteThread"]

T = TypeVar("T")


class SqliteThread:
    """`await db.call(fn, *args)` runs `fn(connection, *args)` on the connection's own thread."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._connection: sqlite3.Connection | None = None

    async def open(self, path: Path, *, busy_timeout: float = 5.0, pragmas: tuple[str, ...] = ()) -> None:
        def connect(_: None) -> None:
            # autocommit (isolation_level None): transactions are explicit (edge.sdk.transaction)
            connection = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            for pragma in pragmas:
                connection.execute(f"PRAGMA {pragma}")
            self._connection = connection

        await asyncio.get_running_loop().run_in_executor(self._executor, connect, None)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        connection = self._connection
        if connection is None:
            raise RuntimeError("the SQLite connection is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, connection, *args)

    async def rows(self, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """One query, executed and fetched in one hop (a statement never stays open between two calls)."""
        return await self.call(_fetchall, query, params)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, connection.close)
        self._executor.shutdown(wait=True)


def _fetchall(connection: sqlite3.Connection, query: str, params: Any) -> list[tuple[Any, ...]]:
    return connection.execute(query, params).fetchall()
