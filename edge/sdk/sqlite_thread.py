"""One SQLite connection driven from asyncio one whole function at a time, on a thread that may be shared.

aiosqlite hops to its thread and back for every statement: an outbox commit (BEGIN, three inserts, the
cursors, COMMIT) was six hops, and a module store's `apply` four or five, each a wake-up of two threads and a
GIL hand-over, which on a small VM costs more CPU than the statements. Here the caller hands the thread a plain
function of the `sqlite3.Connection` and awaits its result, so a whole transaction or a query with its fetch
costs one hop. Only that thread ever touches the connection: it is made, used and closed there.

A connection either owns its thread (the outbox's writer and reader) or runs on a thread shared by name with
other connections of the process (`SqliteThread.shared("module-stores")`): calls of several connections
arriving together then run in one wake-up, one at a time in the order they were made. A call waiting on a
busy file delays the other connections' calls on that thread too.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["SqliteThread"]

T = TypeVar("T")

_shared: dict[str, ThreadPoolExecutor] = {}
_shared_lock = threading.Lock()  # event loops of several threads may open connections


class SqliteThread:
    """`await db.call(fn, *args)` runs `fn(connection, *args)` on the connection's thread."""

    def __init__(self, name: str, *, executor: ThreadPoolExecutor | None = None) -> None:
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._connection: sqlite3.Connection | None = None

    @classmethod
    def shared(cls, name: str) -> SqliteThread:
        """A connection on the process's one thread called `name`, created on first use and never closed."""
        with _shared_lock:
            executor = _shared.get(name)
            if executor is None:
                executor = _shared[name] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        return cls(name, executor=executor)

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    async def open(
        self,
        path: Path | str,
        *,
        uri: bool = False,
        busy_timeout: float = 5.0,
        pragmas: tuple[str, ...] = (),
        setup: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """Connect in autocommit mode (transactions are explicit: `edge.sdk.transaction`), then run `pragmas`
        and `setup` on the new connection; a failing setup closes it again and raises."""

        def connect() -> sqlite3.Connection:
            connection = sqlite3.connect(
                path, uri=uri, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            try:
                for pragma in pragmas:
                    connection.execute(f"PRAGMA {pragma}")
                if setup is not None:
                    setup(connection)
            except BaseException:
                connection.close()
                raise
            return connection

        self._connection = await asyncio.get_running_loop().run_in_executor(self._executor, connect)

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
        loop = asyncio.get_running_loop()
        if connection is not None:
            await loop.run_in_executor(self._executor, connection.close)
        if self._owns_executor:
            self._executor.shutdown(wait=True)


def _fetchall(connection: sqlite3.Connection, query: str, params: Any) -> list[tuple[Any, ...]]:
    return connection.execute(query, params).fetchall()
