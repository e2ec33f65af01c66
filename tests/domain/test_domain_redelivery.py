"""The billing ledger through the kernel's real consumer path: events offered again (a consumer cursor that
was not persisted before a crash) and an interval published again under a new id are booked once."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from edge.module_host.host import ModuleHost, ModuleState
from edge.outbox.sqlite import SqliteOutbox
from edge.plugins import PluginRegistry
from edge.sdk.events import make_event
from edge.sdk.store import ModuleStore, module_store_path
from edge.sdk.tenancy import TenantContext, tenant_scope

ACME = TenantContext("acme", entitlements=frozenset({"billing"}))
GLOBEX = TenantContext("globex")  # not entitled: its energy is never booked
CONFIG = {"price_per_kwh": 0.5, "currency": "EUR"}


async def _energy(outbox: SqliteOutbox, tenant: TenantContext, start: str, wh: float) -> None:
    data = {"site": "roof", "device": "inv-1", "start": start, "end": start, "interval_s": 300.0,
            "energy_wh": wh, "recovered_wh": 0.0, "coverage": 1.0, "methods": ["power"], "gaps": 0,
            "counter_resets": 0}  # fmt: skip
    event = make_event(type="org.edgegw.energy.produced", source="/gw/modules/solar", subject="roof/inv-1",
                       tenant=tenant.tenant_id, time=time.time(), data=data)  # fmt: skip
    with tenant_scope(tenant):
        await outbox.append_durable(event)


async def _ledger(path: Path, tenant: TenantContext) -> list[dict[str, object]]:
    async with ModuleStore(path, "billing", readonly=True) as store, asyncio.timeout(5):
        with tenant_scope(tenant):
            return [v for _, v in await store.items("total/2026-11/")]


async def _booked(host: ModuleHost, count: int) -> None:
    async with asyncio.timeout(5):
        while host.modules["billing"].handled < count:
            await asyncio.sleep(0.02)


async def test_redelivered_and_republished_intervals_are_booked_once(tmp_path: Path) -> None:
    plugin = PluginRegistry.from_entry_points().module("billing")
    assert plugin is not None
    outbox = SqliteOutbox(tmp_path / "outbox.db", commit_interval=0.002)
    await outbox.open()
    host = ModuleHost(outbox, [ACME, GLOBEX], "gw", tmp_path)
    assert (await host.start("billing", plugin, CONFIG)).state is ModuleState.ENABLED
    await _energy(outbox, ACME, "2026-11-10T12:00:00Z", 1000.0)
    await _energy(outbox, ACME, "2026-11-10T12:05:00Z", 2000.0)
    await _energy(outbox, GLOBEX, "2026-11-10T12:00:00Z", 9999.0)
    await _booked(host, 2)
    await host.stop()
    await outbox.close()
    with sqlite3.connect(tmp_path / "outbox.db") as db:  # a crash before the cursor was persisted
        assert db.execute("UPDATE cursors SET position = 0 WHERE consumer = 'module:billing:0'").rowcount == 1

    outbox = SqliteOutbox(tmp_path / "outbox.db", commit_interval=0.002)
    await outbox.open()
    host = ModuleHost(outbox, [ACME, GLOBEX], "gw", tmp_path)
    await host.start("billing", plugin, CONFIG)
    await _energy(outbox, ACME, "2026-11-10T12:05:00Z", 2000.0)  # the solar module published it again
    await _booked(host, 3)  # the two offered again, and the republished one
    await host.stop()
    await outbox.close()
    path = module_store_path(tmp_path, "billing")
    (row,) = await _ledger(path, ACME)
    assert (row["energy_wh"], row["amount"], row["intervals"]) == (3000.0, 1.5, 2)
    assert await _ledger(path, GLOBEX) == []
