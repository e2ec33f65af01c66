"""A module's state (`edge.sdk.StateStore`) on PostgreSQL, for in-process modules of a gateway whose storage is
PostgreSQL: the same tenant-scoped key-value namespace as the SQLite `ModuleStore`, in two tables of the shared
schema (`module_kv`, `module_applied`) keyed by module and tenant.

`apply(..., once=key)` records the key and the changes in one transaction (committed with `synchronous_commit =
on`, so an applied ledger entry survives a server crash); a key applied before rolls everything back and
returns False. Values are JSON (`jsonb`). Applied keys older than `once_ttl` are pruned when the store opens.
Isolated modules keep their SQLite file: their process never receives the database's credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Any, Self

import orjson
import psycopg
from psycopg.types.json import Jsonb

from edge.outbox.postgres import AsyncConn, PgPlace, open_session, prepare_place
from edge.sdk.store import ONCE_TTL, ModuleStoreError, StateStore
from edge.sdk.tenancy import current_tenant
from edge.sdk.transaction import finish_even_if_cancelled

__all__ = ["PostgresModuleStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS module_kv (
    module   text NOT NULL,
    tenant   text NOT NULL,
    key      text NOT NULL,
    value    jsonb NOT NULL,
    updated  double precision NOT NULL,
    PRIMARY KEY (module, tenant, key)
);
CREATE TABLE IF NOT EXISTS module_applied (
    module    text NOT NULL,
    tenant    text NOT NULL,
    once_key  text NOT NULL,
    at        double precision NOT NULL,
    PRIMARY KEY (module, tenant, once_key)
);
"""


class _AppliedBefore(Exception):
    """`apply(..., once=key)` found `key` applied before: its transaction is rolled back."""


class PostgresModuleStore(StateStore):
    """Tenant-scoped key-value storage of one module in PostgreSQL (see the module docstring)."""

    def __init__(
        self, place: PgPlace, module: str, *, readonly: bool = False, once_ttl: float = ONCE_TTL
    ) -> None:
        self.place = place
        self.module = module
        self._readonly = readonly
        self._once_ttl = once_ttl
        self._db: AsyncConn | None = None
        self._lock = asyncio.Lock()  # one transaction at a time on the single connection

    async def open(self) -> None:
        try:
            if not self._readonly:
                await prepare_place(self.place)
            self._db = await open_session(self.place)
            if self._readonly:  # a report while the gateway runs (the billing CLI): it cannot change a row
                await self._db.execute("SET default_transaction_read_only = on")
            else:
                async with self._db.transaction():
                    await self._db.execute("SELECT pg_advisory_xact_lock(hashtext('edge-module-state'))")
                    await self._db.execute(_SCHEMA)
                await self._db.execute(
                    "DELETE FROM module_applied WHERE module = %s AND at < %s",
                    (self.module, time.time() - self._once_ttl),
                )
        except psycopg.Error as exc:
            raise ModuleStoreError(self.module, f"{self.place.describe()}: {exc}") from exc

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(
                psycopg.Error
            ):  # a server that is gone must not stop the module's shutdown
                await db.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _conn(self) -> AsyncConn:
        if self._db is None:
            raise ModuleStoreError(self.module, "the store is not open")
        return self._db

    async def get(self, key: str) -> Any | None:
        tenant = current_tenant().tenant_id
        async with self._lock:
            cursor = await self._conn().execute(
                "SELECT value FROM module_kv WHERE module = %s AND tenant = %s AND key = %s",
                (self.module, tenant, key),
            )
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def items(self, prefix: str = "") -> list[tuple[str, Any]]:
        """Every (key, value) of the current tenant whose key starts with `prefix`, in key order."""
        tenant = current_tenant().tenant_id
        async with self._lock:
            cursor = await self._conn().execute(
                "SELECT key, value FROM module_kv WHERE module = %s AND tenant = %s"
                ' AND left(key, %s) = %s ORDER BY key COLLATE "C"',
                (self.module, tenant, len(prefix), prefix),
            )
            rows = await cursor.fetchall()
        return [(str(key), value) for key, value in rows]

    async def apply(
        self, puts: Mapping[str, Any], deletes: Sequence[str] = (), once: str | None = None
    ) -> bool:
        tenant = current_tenant().tenant_id
        try:  # the same JSON as the SQLite store accepts (orjson), so a module behaves alike on both
            encoded = [(key, Jsonb(orjson.loads(orjson.dumps(value)))) for key, value in puts.items()]
        except TypeError as exc:
            raise ModuleStoreError(self.module, f"value is not JSON: {exc}") from exc
        db = self._conn()
        async with self._lock:
            return await finish_even_if_cancelled(self._transaction(db, tenant, encoded, deletes, once))

    async def _transaction(
        self,
        db: AsyncConn,
        tenant: str,
        encoded: list[tuple[str, Jsonb]],
        deletes: Sequence[str],
        once: str | None,
    ) -> bool:
        now = time.time()
        try:
            async with db.transaction():
                if once is not None:
                    cursor = await db.execute(
                        "INSERT INTO module_applied (module, tenant, once_key, at) VALUES (%s, %s, %s, %s)"
                        " ON CONFLICT DO NOTHING",
                        (self.module, tenant, once, now),
                    )
                    if cursor.rowcount == 0:
                        raise _AppliedBefore
                async with db.cursor() as cursor:
                    if encoded:
                        await cursor.executemany(
                            "INSERT INTO module_kv (module, tenant, key, value, updated) VALUES (%s, %s, %s, %s, %s)"
                            " ON CONFLICT (module, tenant, key) DO UPDATE SET value = excluded.value,"
                            " updated = excluded.updated",
                            [(self.module, tenant, key, value, now) for key, value in encoded],
                        )
                    if deletes:
                        await cursor.executemany(
                            "DELETE FROM module_kv WHERE module = %s AND tenant = %s AND key = %s",
                            [(self.module, tenant, key) for key in deletes],
                        )
        except _AppliedBefore:  # rolled back: nothing of this call is written
            return False
        return True

    async def applied(self, once: str) -> bool:
        """Whether `once` was applied before, for the current tenant."""
        tenant = current_tenant().tenant_id
        async with self._lock:
            cursor = await self._conn().execute(
                "SELECT 1 FROM module_applied WHERE module = %s AND tenant = %s AND once_key = %s",
                (self.module, tenant, once),
            )
            return await cursor.fetchone() is not None
