"""A module's own storage namespace (`StateStore`): one SQLite file per module (`ModuleStore`), every row owned by a
tenant. On a gateway whose storage is PostgreSQL, in-process modules get the same interface on PostgreSQL
(`edge.outbox.pg_module_store`); isolated modules keep this file in their own process.

`{data_dir}/modules/{module}.sqlite`, WAL with `synchronous=FULL` (a ledger entry that was applied survives
power loss). Keys are text, values JSON. Every query is filtered by the current tenant
(`edge.sdk.tenancy.current_tenant()`, read in `_tenant` only), so a module handling one tenant's event cannot
read or change another tenant's rows, and touching the store outside a tenant scope raises.

`apply(puts, deletes, once=...)` changes several keys in one transaction; with `once` (an event id, a bucket
key) it first records that key and does nothing, returning False, when it was applied before: a module that
is offered the same event again after a crash does not count it twice. Applied keys are kept `once_ttl`
seconds (pruned when the store opens), far longer than any redelivery window of the outbox.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import aiosqlite
import orjson

from edge.sdk.errors import EdgeError
from edge.sdk.tenancy import current_tenant
from edge.sdk.transaction import async_transaction, finish_even_if_cancelled

__all__ = ["ModuleStore", "ModuleStoreError", "StateStore", "module_store_path"]

ONCE_TTL = 90 * 86_400.0  # seconds an applied `once` key is remembered

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS applied (
    tenant TEXT NOT NULL,
    once_key TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (tenant, once_key)
) WITHOUT ROWID;
"""


@runtime_checkable
class StateStore(Protocol):
    """A module's tenant-scoped key-value state, whichever database keeps it (`ModuleContext.store`): this
    SQLite file per module by default, PostgreSQL when the gateway's storage is (`[storage] backend`). Every
    call acts for the current tenant and raises `NoTenantContext` outside a tenant scope."""

    module: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def get(self, key: str) -> Any | None: ...
    async def items(self, prefix: str = "") -> list[tuple[str, Any]]:
        """Every (key, value) of the current tenant whose key starts with `prefix`, in key order."""

    async def put(self, key: str, value: Any) -> None:
        await self.apply({key: value})

    async def delete(self, key: str) -> None:
        await self.apply({}, [key])

    async def apply(
        self, puts: Mapping[str, Any], deletes: Sequence[str] = (), once: str | None = None
    ) -> bool:
        """Write `puts` and remove `deletes` in one transaction. With `once`, do nothing and return False
        when that key was applied before (for this tenant); True when the changes were made."""

    async def applied(self, once: str) -> bool: ...


class _AppliedBefore(Exception):
    """`apply(..., once=key)` found `key` applied before: its transaction is rolled back."""


class ModuleStoreError(EdgeError):
    """The module's store cannot be used (not open, a value that is not JSON, a corrupt file)."""

    def __init__(self, module: str, reason: str) -> None:
        self.module = module
        self.reason = reason
        super().__init__(f"module {module!r} store: {reason}")


def module_store_path(data_dir: Path, module: str) -> Path:
    return data_dir / "modules" / f"{module}.sqlite"


def _tenant() -> str:
    """The only tenant filter of the module stores: raises NoTenantContext outside a tenant scope."""
    return current_tenant().tenant_id


class ModuleStore(StateStore):
    """Tenant-scoped key-value storage of one module (see the module docstring)."""

    def __init__(
        self, path: Path, module: str, *, readonly: bool = False, once_ttl: float = ONCE_TTL
    ) -> None:
        self.path = path
        self.module = module
        self._readonly = readonly
        self._once_ttl = once_ttl
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one transaction at a time on the single connection

    async def open(self) -> None:
        try:
            if self._readonly:
                uri = f"file:{self.path}?mode=ro"
                self._db = await aiosqlite.connect(uri, uri=True, isolation_level=None)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, isolation_level=None, timeout=10.0)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=FULL")
            await self._db.executescript(_SCHEMA)
            await self._db.execute("DELETE FROM applied WHERE at < ?", (time.time() - self._once_ttl,))
        except sqlite3.Error as exc:
            raise ModuleStoreError(self.module, f"{self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def __aenter__(self) -> ModuleStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise ModuleStoreError(self.module, "the store is not open")
        return self._db

    async def get(self, key: str) -> Any | None:
        tenant = _tenant()
        async with self._conn().execute(
            "SELECT value FROM kv WHERE tenant = ? AND key = ?", (tenant, key)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else orjson.loads(row[0])

    async def items(self, prefix: str = "") -> list[tuple[str, Any]]:
        """Every (key, value) of the current tenant whose key starts with `prefix`, in key order."""
        tenant = _tenant()
        async with self._conn().execute(
            "SELECT key, value FROM kv WHERE tenant = ? AND substr(key, 1, ?) = ? ORDER BY key",
            (tenant, len(prefix), prefix),
        ) as cursor:
            rows = await cursor.fetchall()
        return [(str(key), orjson.loads(value)) for key, value in rows]

    async def apply(
        self, puts: Mapping[str, Any], deletes: Sequence[str] = (), once: str | None = None
    ) -> bool:
        tenant = _tenant()
        now = time.time()
        try:
            encoded = [(tenant, key, orjson.dumps(value), now) for key, value in puts.items()]
        except TypeError as exc:
            raise ModuleStoreError(self.module, f"value is not JSON: {exc}") from exc
        db = self._conn()
        async with self._lock:
            # aiosqlite runs each statement in its own thread: a cancelled await could otherwise leave the
            # connection inside a transaction, or a half-known outcome
            return await finish_even_if_cancelled(self._transaction(db, tenant, encoded, deletes, once, now))

    async def _transaction(
        self,
        db: aiosqlite.Connection,
        tenant: str,
        encoded: list[tuple[str, str, bytes, float]],
        deletes: Sequence[str],
        once: str | None,
        now: float,
    ) -> bool:
        try:
            async with async_transaction(db):
                if once is not None:
                    cursor = await db.execute(
                        "INSERT OR IGNORE INTO applied (tenant, once_key, at) VALUES (?, ?, ?)",
                        (tenant, once, now),
                    )
                    if cursor.rowcount == 0:
                        raise _AppliedBefore
                if encoded:
                    await db.executemany(
                        "INSERT INTO kv (tenant, key, value, updated) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value, updated = excluded.updated",
                        encoded,
                    )
                if deletes:
                    await db.executemany(
                        "DELETE FROM kv WHERE tenant = ? AND key = ?", [(tenant, key) for key in deletes]
                    )
        except _AppliedBefore:  # rolled back: nothing of this call is written
            return False
        return True

    async def applied(self, once: str) -> bool:
        """Whether `once` was applied before, for the current tenant."""
        tenant = _tenant()
        async with self._conn().execute(
            "SELECT 1 FROM applied WHERE tenant = ? AND once_key = ?", (tenant, once)
        ) as cursor:
            return await cursor.fetchone() is not None
