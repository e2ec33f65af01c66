"""One SQLite transaction: BEGIN, then COMMIT when the block ends, ROLLBACK when it raises.

Every hand-written transaction of the gateway goes through here (the outbox, its migrations and tenant
operations, the webhook store, the module store, the module state file), so the rules are written once:

- COMMIT runs inside the guarded block: a COMMIT that fails (disk full, a busy file) is rolled back too, and
  the connection never stays inside a half-finished transaction.
- The ROLLBACK never hides the error that caused it: when SQLite already rolled back on its own (it does on
  some I/O errors) or the connection is gone, the rollback's own failure is suppressed and the original error
  propagates.
- `immediate=True` (the default) takes the write lock at BEGIN, where the connection's busy timeout applies;
  a deferred transaction that reads first and writes later can instead fail at once with SQLITE_BUSY when
  another connection wrote in between. Deferred (`immediate=False`) suits a connection that is the file's only
  writer, or a read snapshot.

It lives in the SDK because the module store (`edge.sdk.store`) uses it and the SDK imports nothing from the
kernel; the kernel's stores import it from here. It is not re-exported from `edge.sdk` itself (like
`edge.sdk.certs`): a plug-in with a SQLite file of its own may use it, most never need to.

Locks are the caller's: hold the store's lock around the block (`with lock, transaction(db):`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

import aiosqlite

__all__ = ["async_transaction", "finish_even_if_cancelled", "transaction"]


T = TypeVar("T")


async def finish_even_if_cancelled(transaction: Coroutine[Any, Any, T]) -> T:
    """Run a started transaction to its end even when the caller is cancelled (a module stopping), then
    re-raise the cancellation: the connection never stays inside a transaction, and the outcome is known
    (committed or rolled back), whichever database driver runs it."""
    job = asyncio.ensure_future(transaction)
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        while not job.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([job])
        raise


def _begin(immediate: bool) -> str:
    return "BEGIN IMMEDIATE" if immediate else "BEGIN"


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, *, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """A transaction on a `sqlite3` connection opened with `isolation_level=None` (see the module docs)."""
    db.execute(_begin(immediate))
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):  # never hide the original error
            if db.in_transaction:
                db.execute("ROLLBACK")
        raise


@contextlib.asynccontextmanager
async def async_transaction(
    db: aiosqlite.Connection, *, immediate: bool = True
) -> AsyncIterator[aiosqlite.Connection]:
    """The same on an `aiosqlite` connection opened with `isolation_level=None`."""
    await db.execute(_begin(immediate))
    try:
        yield db
        await db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):  # never hide the original error
            if db.in_transaction:
                await db.execute("ROLLBACK")
        raise
