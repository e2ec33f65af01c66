"""Fencing on the shared PostgreSQL outbox: a commit stores a device's events only while this instance holds
the device's lease, checked inside the committing transaction (edge/cluster/fence.py)."""

from __future__ import annotations

import time
import uuid

import pytest

from bench.postgres import PostgresServer
from edge.cluster import LeaseStore, connect
from edge.cluster.fence import LeaseFence, fence_store
from edge.outbox.postgres import PgPlace, PostgresOutbox
from edge.outbox.store import FencedOut
from edge.sdk.events import TELEMETRY, Event, make_event
from edge.sdk.tenancy import TenantContext, tenant_scope

ACME = TenantContext("acme")


def _reading(device: str, sequence: int) -> Event:
    return make_event(
        type=TELEMETRY,
        source=f"/gw/modbus/{device}",
        subject=f"roof/{device}",
        tenant="acme",
        time=time.time(),
        data={"device": device, "site": "roof", "points": {}},
        device=device,
        sequence=sequence,
    )


async def test_commits_store_only_devices_whose_lease_is_held(postgres: PostgresServer) -> None:
    cluster = f"c-{uuid.uuid4().hex[:8]}"
    dsn = postgres.create_database(f"fence_{uuid.uuid4().hex[:8]}")  # leases and outbox in one database
    db = await connect(dsn, postgres.password, 5.0)
    leases = LeaseStore(db, cluster)
    await leases.create_schema()
    await leases.claim("device", ["inv-01"], "a", "token-a", 30.0)
    await leases.claim("device", ["inv-02"], "b", "token-b", 30.0)
    outbox = PostgresOutbox(PgPlace(dsn, postgres.password, "edge"))
    assert fence_store(outbox, "acme", LeaseFence(cluster, "token-a"))
    await outbox.open()
    try:
        with tenant_scope(ACME):  # the pollers append inside their tenant's scope
            assert await outbox.append_durable(_reading("inv-01", 1)) > 0  # a holds inv-01
            with pytest.raises(FencedOut, match="inv-02"):
                await outbox.append_durable(_reading("inv-02", 1))  # b's device
            await outbox.append(_reading("inv-01", 2))
            await outbox.append(_reading("inv-02", 2))
            assert await outbox.append_durable(_reading("inv-01", 3)) > 0
            # a's lease expires and b takes inv-01: a's next events of it are refused too
            await db.execute(
                "UPDATE edge_cluster.leases SET expires_at = now() WHERE cluster = %s", (cluster,)
            )
            assert [c.name for c in await leases.claim("device", ["inv-01"], "b", "token-b", 30.0)] == [
                "inv-01"
            ]
            with pytest.raises(FencedOut):
                await outbox.append_durable(_reading("inv-01", 4))
            stored = [(e.device, e.sequence) for e in await outbox.read_after(0, 100)]
        assert stored == [("inv-01", 1), ("inv-01", 2), ("inv-01", 3)]
        assert outbox.fenced_events == 3
        assert (await outbox.last_sequences())[("acme", "inv-01")] == 3  # where b continues from
    finally:
        await outbox.close()
        await db.close()
