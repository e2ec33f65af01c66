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

import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import orjson

from edge.sdk.errors import EdgeError
from edge.sdk.sqlite_thread import SqliteThread
from edge.sdk.tenancy import current_tenant
from edge.sdk.transaction import finish_even_if_cancelled, transaction

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
    """Tenant-scoped key-value storage of one module (see the module docstring).

    Every call is one hop to the SQLite thread that all module stores of the process share (`STORE_THREAD`):
    a whole `apply` transaction, or a query with its fetch, and calls of several modules' stores arriving
    together run in one wake-up. Calls run in the order they were made."""

    def __init__(
        self, path: Path, module: str, *, readonly: bool = False, once_ttl: float = ONCE_TTL
    ) -> None:
        self.path = path
        self.module = module
        self._readonly = readonly
        self._once_ttl = once_ttl
        self._db: SqliteThread | None = None

    async def open(self) -> None:
        db = SqliteThread.shared(STORE_THREAD)
        try:
            if self._readonly:
                await db.open(f"file:{self.path}?mode=ro", uri=True, busy_timeout=5.0)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                await db.open(
                    self.path,
                    busy_timeout=10.0,
                    pragmas=("journal_mode=WAL", "synchronous=FULL"),
                    setup=self._create_schema,
                )
        except sqlite3.Error as exc:
            raise ModuleStoreError(self.module, f"{self.path}: {exc}") from exc
        self._db = db

    def _create_schema(self, db: sqlite3.Connection) -> None:
        db.executescript(_SCHEMA)
        db.execute("DELETE FROM applied WHERE at < ?", (time.time() - self._once_ttl,))

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def __aenter__(self) -> ModuleStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _conn(self) -> SqliteThread:
        if self._db is None:
            raise ModuleStoreError(self.module, "the store is not open")
        return self._db

    async def get(self, key: str) -> Any | None:
        rows = await self._conn().rows("SELECT value FROM kv WHERE tenant = ? AND key = ?", (_tenant(), key))
        return None if not rows else orjson.loads(rows[0][0])

    async def items(self, prefix: str = "") -> list[tuple[str, Any]]:
        """Every (key, value) of the current tenant whose key starts with `prefix`, in key order."""
        rows = await self._conn().rows(
            "SELECT key, value FROM kv WHERE tenant = ? AND substr(key, 1, ?) = ? ORDER BY key",
            (_tenant(), len(prefix), prefix),
        )
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
        removed = [(tenant, key) for key in deletes]
        applying = self._conn().call(_apply, tenant, encoded, removed, once, now)
        # once handed to the thread the transaction runs to its end: a cancelled caller re-raises only then,
        # and the next call (queued behind it) sees its outcome
        return await finish_even_if_cancelled(applying)

    async def applied(self, once: str) -> bool:
        """Whether `once` was applied before, for the current tenant."""
        rows = await self._conn().rows(
            "SELECT 1 FROM applied WHERE tenant = ? AND once_key = ?", (_tenant(), once)
        )
        return bool(rows)


# The module stores' shared SQLite thread (see edge.sdk.sqlite_thread): a call waiting on a busy file (another
# process writing the same store, up to the busy timeout) delays the other stores' calls too.
STORE_THREAD = "module-stores"


def _apply(
    db: sqlite3.Connection,
    tenant: str,
    encoded: list[tuple[str, str, bytes, float]],
    removed: list[tuple[str, str]],
    once: str | None,
    now: float,
) -> bool:
    """`ModuleStore.apply` as one transaction, on the store thread."""
    try:
        with transaction(db):
            if once is not None:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO applied (tenant, once_key, at) VALUES (?, ?, ?)",
                    (tenant, once, now),
                )
                if cursor.rowcount == 0:
                    raise _AppliedBefore
            if encoded:
                db.executemany(
                    "INSERT INTO kv (tenant, key, value, updated) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value, updated = excluded.updated",
                    encoded,
                )
            if removed:
                db.executemany("DELETE FROM kv WHERE tenant = ? AND key = ?", removed)
    except _AppliedBefore:  # rolled back: nothing of this call is written
        return False
    return True
