"""The outbox on both backends (`stores`): durability across reopen, cursors, sequences, tenant isolation of reads."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from edge.outbox.sqlite import SqliteOutbox
from edge.outbox.store import GroupCommitOutbox
from edge.sdk.errors import NoTenantContext
from edge.sdk.events import TELEMETRY, Event, make_event
from edge.sdk.tenancy import TenantContext, tenant_scope
from tests.outbox_stores import Stores

ACME = TenantContext("acme")
GLOBEX = TenantContext("globex")


TENANTS = {"acme": ACME, "globex": GLOBEX}


async def _append(outbox: GroupCommitOutbox, event: Event, durable: bool = False) -> int:
    with tenant_scope(TENANTS[event.tenant]):  # writes happen inside the owning tenant's context
        if durable:
            return await outbox.append_durable(event)
        await outbox.append(event)
        return 0


def _event(tenant: str, device: str, sequence: int) -> Event:
    return make_event(
        type=TELEMETRY,
        source=f"/gw/modbus/{device}",
        subject=f"site/{device}",
        tenant=tenant,
        time=time.time(),
        data={
            "device": device,
            "site": "site",
            "points": {"p": {"value": sequence, "unit": None, "quality": "good"}},
        },
        device=device,
        sequence=sequence,
    )


async def test_committed_events_survive_reopen_in_order(stores: Stores) -> None:
    outbox = stores()
    await outbox.open()
    for i in range(1, 101):
        await _append(outbox, _event("acme", "inv-1", i))
    await outbox.close()  # close commits everything appended

    again = stores()
    await again.open()
    with tenant_scope(ACME):
        rows = await again.read_after(0, 1000)
    assert [r.sequence for r in rows] == list(range(1, 101))
    assert [r.position for r in rows] == sorted(r.position for r in rows)
    assert orjson.loads(rows[0].body)["tenantid"] == "acme"
    assert await again.last_sequences() == {("acme", "inv-1"): 100}
    await again.close()


async def test_durable_append_returns_after_commit(stores: Stores) -> None:
    outbox = stores()
    await outbox.open()
    position = await _append(outbox, durable=True, event=_event("acme", "inv-1", 1))
    # Another connection sees the row at once: it was committed before append_durable returned.
    assert stores.sql("SELECT COUNT(*) FROM outbox WHERE position = ?", (position,)) == [(1,)]
    if stores.backend == "sqlite":
        assert stores.sql("PRAGMA journal_mode") == [("wal",)]
    else:
        assert stores.sql("SHOW synchronous_commit") == [
            ("on",)
        ]  # the server default; the outbox sets it too
    await outbox.close()


async def test_one_tenant_cannot_read_another_tenants_rows(stores: Stores) -> None:
    outbox = stores()
    await outbox.open()
    for i in range(1, 6):
        await _append(outbox, _event("acme", "a", i))
        await _append(outbox, _event("globex", "g", i))
    await _append(outbox, durable=True, event=_event("globex", "g", 6))
    with tenant_scope(ACME):
        acme_rows = await outbox.read_after(0, 100)
        assert await outbox.count() == 5
    with tenant_scope(GLOBEX):
        globex_rows = await outbox.read_after(0, 100)
    assert {r.tenant for r in acme_rows} == {"acme"}
    assert {r.tenant for r in globex_rows} == {"globex"}
    assert len(globex_rows) == 6
    with pytest.raises(NoTenantContext):
        await outbox.read_after(0, 100)
    await outbox.close()


async def test_cursors_are_per_tenant_and_persist(stores: Stores) -> None:
    outbox = stores()
    await outbox.open()
    for i in range(1, 11):
        await _append(outbox, _event("acme", "a", i))
    last = await _append(outbox, durable=True, event=_event("acme", "a", 11))
    with tenant_scope(ACME):
        outbox.set_cursor("mqtt", last - 3)
        assert await outbox.backlog("mqtt") == 3
    with tenant_scope(GLOBEX):
        assert await outbox.cursor("mqtt") == 0
    await outbox.close()

    again = stores()
    await again.open()
    with tenant_scope(ACME):
        assert await again.cursor("mqtt") == last - 3
        rows = await again.read_after(await again.cursor("mqtt"), 100)
        assert [r.sequence for r in rows] == [9, 10, 11]
    await again.close()


async def test_backlog_stays_exact_as_the_cursor_catches_up_and_new_rows_arrive(stores: Stores) -> None:
    outbox = stores()
    await outbox.open()
    for i in range(1, 4):
        await _append(outbox, _event("acme", "a", i))
    last = await _append(outbox, durable=True, event=_event("acme", "a", 4))
    await _append(outbox, durable=True, event=_event("globex", "g", 1))  # a later position, another tenant
    with tenant_scope(ACME):
        assert await outbox.backlog("mqtt") == 4  # never moved: counted in the store
        outbox.set_cursor("mqtt", last - 1)
        assert await outbox.backlog("mqtt") == 1
        outbox.set_cursor("mqtt", last)
        assert await outbox.backlog("mqtt") == 0  # on SQLite from what the store knows, without a query
        await _append(outbox, durable=True, event=_event("acme", "a", 5))
        assert await outbox.backlog("mqtt") == 1  # a newer row of the tenant: counted again
    with tenant_scope(GLOBEX):
        assert await outbox.backlog("mqtt") == 1
    await outbox.close()


async def test_group_commit_batches_many_events_per_transaction(stores: Stores) -> None:
    outbox = stores(commit_interval=0.02, commit_max_events=500)
    await outbox.open()
    for i in range(1, 2001):
        await _append(outbox, _event("acme", "a", i))
    await _append(outbox, durable=True, event=_event("acme", "a", 2001))
    assert outbox.committed_events == 2001
    assert outbox.commits <= 20  # not one fsync per event
    await outbox.close()


async def test_writing_outside_or_across_tenant_contexts_is_refused(stores: Stores) -> None:
    outbox = stores()
    await outbox.open()
    with pytest.raises(NoTenantContext):
        await outbox.append(_event("acme", "a", 1))
    with tenant_scope(GLOBEX), pytest.raises(NoTenantContext, match="written in the context of 'globex'"):
        await outbox.append(_event("acme", "a", 1))
    await outbox.close()
    assert outbox.committed_events == 0


async def test_a_refused_commit_is_retried_and_nothing_appended_is_dropped(tmp_path: Path) -> None:
    outbox = SqliteOutbox(tmp_path / "o.db", busy_timeout=0.05)
    await outbox.open()
    blocker = sqlite3.connect(tmp_path / "o.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the file: every commit attempt fails meanwhile
    for i in range(1, 101):
        await _append(outbox, _event("acme", "a", i))
    await asyncio.sleep(1.0)
    assert outbox.commit_failures > 0 and outbox.committed_events == 0
    blocker.execute("ROLLBACK")
    blocker.close()
    await _append(outbox, _event("acme", "a", 101), durable=True)
    with tenant_scope(ACME):
        assert [r.sequence for r in await outbox.read_after(0, 1000)] == list(range(1, 102))
    await outbox.close()


async def test_a_dropped_postgresql_connection_is_reopened_and_nothing_appended_is_dropped(
    stores: Stores,
) -> None:
    if stores.backend != "postgresql":
        pytest.skip("PostgreSQL's counterpart of the locked-file test above")
    outbox = stores(commit_interval=0.001)
    await outbox.open()
    await _append(outbox, _event("acme", "a", 1), durable=True)
    # the server ends every session of the outbox (an administrator, a failover, a network cut)
    ended = stores.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid()"
    )
    assert ended and all(ok for (ok,) in ended)
    for i in range(2, 101):
        await _append(outbox, _event("acme", "a", i))
    await _append(outbox, _event("acme", "a", 101), durable=True)
    assert outbox.commit_failures >= 1  # the first commit after the cut failed, and was retried
    with tenant_scope(ACME):
        assert [r.sequence for r in await outbox.read_after(0, 1000)] == list(range(1, 102))
    await outbox.close()
