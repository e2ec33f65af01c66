"""A module's storage namespace on both backends (`stores`): tenant isolation, atomic idempotent apply,
durability across reopen, cancellation."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from edge.sdk.errors import NoTenantContext
from edge.sdk.store import ModuleStoreError
from edge.sdk.tenancy import TenantContext, tenant_scope
from tests.outbox_stores import Stores

ACME = TenantContext("acme")
GLOBEX = TenantContext("globex")


async def test_each_tenant_sees_only_its_own_rows(stores: Stores) -> None:
    async with stores.module("billing") as store:
        with tenant_scope(ACME):
            await store.put("ledger/2026-11/hq", {"kwh": 12.5})
            await store.put("ledger/2026-12/hq", {"kwh": 1.0})
            await store.put("other", [1, 2])
        with tenant_scope(GLOBEX):
            assert await store.get("ledger/2026-11/hq") is None
            assert await store.items() == []
            await store.put("ledger/2026-11/hq", {"kwh": 99.0})
            await store.delete("other")  # another tenant's key of the same name is not touched
        with tenant_scope(ACME):
            assert await store.get("ledger/2026-11/hq") == {"kwh": 12.5}
            assert await store.items("ledger/") == [
                ("ledger/2026-11/hq", {"kwh": 12.5}),
                ("ledger/2026-12/hq", {"kwh": 1.0}),
            ]
            assert await store.get("other") == [1, 2]
        with pytest.raises(NoTenantContext):
            await store.get("ledger/2026-11/hq")


async def test_apply_is_atomic_and_once_makes_a_redelivered_event_a_no_op(stores: Stores) -> None:
    async with stores.module("billing") as store:
        with tenant_scope(ACME):
            await store.put("pending", True)
            assert await store.apply({"total": 5, "entry/1": 5}, ["pending"], once="event-1") is True
            assert await store.apply({"total": 10, "entry/1": 10}, once="event-1") is False
            assert await store.items() == [("entry/1", 5), ("total", 5)]
            with pytest.raises(ModuleStoreError, match="not JSON"):
                await store.apply({"total": object()}, once="event-2")
            assert await store.get("total") == 5 and not await store.applied("event-2")
        with tenant_scope(GLOBEX):  # once keys are per tenant too
            assert await store.apply({"total": 7}, once="event-1") is True


async def test_rows_survive_reopening_and_a_reader_sees_them_while_the_writer_is_open(stores: Stores) -> None:
    store = stores.module("solar")
    await store.open()
    with tenant_scope(ACME):
        await store.apply({"state/hq/inv-1": {"wh": 1234.5}}, once="e1")
    async with stores.module("solar", readonly=True) as reader:
        with tenant_scope(ACME):
            assert await reader.get("state/hq/inv-1") == {"wh": 1234.5}
    await store.close()
    async with stores.module("solar") as again:
        with tenant_scope(ACME):
            assert await again.get("state/hq/inv-1") == {"wh": 1234.5}
            assert await again.apply({"x": 1}, once="e1") is False


async def test_a_write_cancelled_mid_transaction_stays_cancelled_and_leaves_the_store_usable(
    stores: Stores,
) -> None:
    async with stores.module("alarms") as store:
        with tenant_scope(ACME):
            for i in range(40):  # cancel at ever later moments: before, inside and after the transaction
                task = asyncio.create_task(store.apply({f"k{i}": i, "big": "x" * 10_000}, once=f"e{i}"))
                await asyncio.sleep(i * 0.0001)
                task.cancel()
                # a cancelled write is cancelled, never turned into another error
                with contextlib.suppress(asyncio.CancelledError):
                    assert await task is True
                assert (await store.get(f"k{i}") == i) == await store.applied(f"e{i}")  # all or nothing
            assert await store.apply({"after": 1}, once="after") is True
