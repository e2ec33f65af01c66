"""Cloud sync over real HTTP: the module hosted by the kernel, a real outbox, cloud simulators on loopback.

Outage and recovery, restart mid-backlog, flaky uplink, 429, poison events, token refresh, per-tenant
endpoints and credentials, fairness. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path

import pytest

from edge.outbox.sqlite import SqliteOutbox
from edge.sdk.tenancy import TenantContext, tenant_scope
from tests.cloud_harness import (
    CONSUMER,
    in_order,
    ingest,
    simulator,
    start_sync,
    sync_config,
)
from tests.helpers import until

ACME = TenantContext("acme")
GLOBEX = TenantContext("globex")

pytestmark = pytest.mark.timeout(60)


def _files(folder: Path, pattern: str) -> bytes:
    return b"".join(p.read_bytes() for p in folder.glob(pattern))


async def _outbox(tmp_path: Path) -> SqliteOutbox:
    outbox = SqliteOutbox(tmp_path / "outbox.db", commit_interval=0.002)
    await outbox.open()
    return outbox


async def settled(outbox: SqliteOutbox, tenant: TenantContext) -> None:
    """Wait (bounded: 5 s) until the uplink's cursor has passed every event of `tenant`: the cloud stores a
    batch before its answer reaches the gateway, so "the cloud has it" comes a moment before the cursor."""

    async def drained() -> bool:
        return await outbox.backlog(CONSUMER) == 0

    with tenant_scope(tenant):
        await until(drained, 5.0, f"the uplink's cursor past {tenant.tenant_id}'s events", step=0.05)


async def test_an_outage_loses_nothing_and_recovery_delivers_everything_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with simulator("acme", "globex") as sim:
        outbox = await _outbox(tmp_path)
        sync = await start_sync(outbox, [ACME, GLOBEX], sync_config({"acme": sim, "globex": sim}, tmp_path))
        await sim.set_down(True)
        acme = await ingest(outbox, ACME, ["inv-1", "inv-2", "inv-3"], 400)
        globex = await ingest(outbox, GLOBEX, ["ahu-1", "ahu-2"], 300)
        await asyncio.sleep(1.0)  # the module keeps trying against a refused port
        assert sim.unique() == 0
        with tenant_scope(ACME):
            assert await outbox.backlog(CONSUMER) == len(acme)
            assert "ConnectError" in ((await outbox.consumer_status(CONSUMER)).last_error or "")
        await sim.set_down(False)
        await until(
            lambda: sim.unique("acme") == len(acme) and sim.unique("globex") == len(globex), within=20.0
        )
        for tenant in (ACME, GLOBEX):  # the last batch's cursor moves after its answer
            await settled(outbox, tenant)
        await sync.stop()

        assert {e[1] for e in sim.received("acme")} == {e.id for e in acme}  # no loss
        assert in_order(sim, "acme") and in_order(sim, "globex")
        assert sim.tenants["acme"].duplicates == 0  # refused connections never store anything
        # every batch single-tenant, each sent with its own tenant's token
        assert sim.cross_tenant == 0
        assert {(r.client, r.tenant) for r in sim.requests if r.status == 200} == {
            ("acme", "acme"),
            ("globex", "globex"),
        }
        with tenant_scope(GLOBEX):
            assert await outbox.backlog(CONSUMER) == 0
            status = await outbox.consumer_status(CONSUMER)
            assert status.delivered == len(globex) and status.last_success is not None
        await outbox.close()
    # secrets stay in memory: never in the outbox (database or WAL) nor in any log line
    stored = _files(tmp_path, "outbox.db*")
    for creds in sim.clients.values():
        for secret in (creds.client_secret.encode(), creds.hmac_key):
            assert secret not in stored and secret.decode() not in caplog.text


async def test_a_restart_mid_backlog_loses_nothing_and_repeats_only_identical_ids(tmp_path: Path) -> None:
    async with simulator("acme", seed=3) as sim:
        sim.faults.latency = 0.02
        outbox = await _outbox(tmp_path)
        config = sync_config({"acme": sim}, tmp_path, batch_size=200)
        events = await ingest(outbox, ACME, ["inv-1", "inv-2"], 2000)
        sync = await start_sync(outbox, [ACME], config)
        await until(lambda: sim.unique() >= 1000, within=20.0)
        await sync.stop()  # mid-upload: a batch may be on the wire
        await outbox.close()
        got_before = sim.unique()
        assert got_before < len(events)

        outbox = await _outbox(tmp_path)
        sync = await start_sync(outbox, [ACME], config)
        await until(lambda: sim.unique() == len(events), within=20.0)
        await sync.stop()
        await outbox.close()
    assert in_order(sim, "acme")
    assert sim.key_conflicts == 0  # a resent batch carries the same ids under the same key
    assert sim.tenants["acme"].duplicates <= 200  # at most the batch in flight at the stop


async def test_a_flaky_uplink_delivers_everything_with_few_duplicates(tmp_path: Path) -> None:
    async with simulator("acme", seed=7) as sim:
        faults = sim.faults
        faults.error_rate, faults.reset_rate, faults.reset_after_rate = 0.15, 0.1, 0.05
        faults.latency, faults.jitter = 0.005, 0.02
        outbox = await _outbox(tmp_path)
        sync = await start_sync(outbox, [ACME], sync_config({"acme": sim}, tmp_path, batch_size=250))
        events = await ingest(outbox, ACME, ["inv-1", "inv-2", "inv-3", "inv-4"], 2500)
        await until(lambda: sim.unique() == len(events), within=40)
        await sync.stop()
        await outbox.close()
    record = sim.tenants["acme"]
    statuses = Counter(r.status for r in sim.requests)
    assert statuses[503] > 0 and statuses[0] > 0  # 5xx and resets happened
    assert in_order(sim, "acme") and sim.key_conflicts == 0
    # duplicates come only from answers lost after storing: each repeats at most one batch
    lost_answers = sum(1 for r in sim.requests if r.reason.startswith("answer lost"))
    assert record.duplicates <= 250 * lost_answers
    assert record.duplicates / len(events) < 0.15
    keys = Counter(r.idempotency_key for r in sim.requests)
    assert max(keys.values()) > 1  # batches were retried under their key


async def test_429_with_retry_after_is_honoured(tmp_path: Path) -> None:
    async with simulator("acme") as sim:
        sim.faults.fail_next = [(429, 1.0)]
        outbox = await _outbox(tmp_path)
        sync = await start_sync(outbox, [ACME], sync_config({"acme": sim}, tmp_path))
        events = await ingest(outbox, ACME, ["inv-1"], 20)
        await until(lambda: sim.unique() == len(events), within=20.0)
        await sync.stop()
        await outbox.close()
    first, second = sim.requests[0], sim.requests[1]
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 0.95
    assert second.idempotency_key == first.idempotency_key


async def test_a_poison_event_becomes_a_dead_letter_and_the_queue_moves_on(tmp_path: Path) -> None:
    async with simulator("acme") as sim:
        outbox = await _outbox(tmp_path)
        events = await ingest(outbox, ACME, ["inv-1", "inv-2"], 50)
        poison = {events[10].id, events[57].id}
        sim.faults.poison = set(poison)
        sync = await start_sync(outbox, [ACME], sync_config({"acme": sim}, tmp_path, batch_size=40))
        later = await ingest(outbox, ACME, ["inv-1", "inv-2"], 50, start=51)
        await until(lambda: sim.unique() == len(events) + len(later) - 2, within=20.0)
        await settled(outbox, ACME)  # the queue was never blocked
        await sync.stop()
        with tenant_scope(ACME):
            dead = await outbox.dead_letters(CONSUMER)
            assert {d.event.id for d in dead} == poison
            assert all("poison" in d.reason and d.reason.startswith("HTTP 400") for d in dead)
        assert {e[1] for e in sim.received("acme")} == {e.id for e in events + later} - poison

        # the receiver is fixed; the operator replays the dead letters
        sim.faults.poison.clear()
        with tenant_scope(ACME):
            assert await outbox.request_replay() == 2
        sync = await start_sync(outbox, [ACME], sync_config({"acme": sim}, tmp_path))
        await until(lambda: sim.unique() == len(events) + len(later), within=20.0)
        await asyncio.sleep(0.1)
        with tenant_scope(ACME):
            assert await outbox.dead_letters(CONSUMER) == []
        await sync.stop()
        await outbox.close()


async def test_a_refused_token_is_refreshed_once_and_tokens_are_renewed_before_expiry(tmp_path: Path) -> None:
    async with simulator("acme", token_ttl=3.0) as sim:
        outbox = await _outbox(tmp_path)
        sync = await start_sync(outbox, [ACME], sync_config({"acme": sim}, tmp_path, token_leeway=1.0))
        first = await ingest(outbox, ACME, ["inv-1"], 10)
        await until(lambda: sim.unique() == len(first), within=20.0)
        assert sim.tokens_issued["acme"] == 1
        sim.revoke_tokens()  # the platform revoked it: the next upload gets a 401
        second = await ingest(outbox, ACME, ["inv-1"], 10, start=11)
        await until(lambda: sim.unique() == len(first) + len(second), within=20.0)
        assert sim.tokens_issued["acme"] == 2
        assert [r.status for r in sim.requests].count(401) == 1
        # a token about to expire is replaced before it is used: no 401 for an expiring token
        for start in (21, 31, 41, 51):
            await asyncio.sleep(0.7)
            await ingest(outbox, ACME, ["inv-1"], 10, start=start)
        await until(lambda: sim.unique() == 6 * 11, within=20.0)
        assert [r.status for r in sim.requests].count(401) == 1
        assert sim.tokens_issued["acme"] >= 3
        await sync.stop()
        await outbox.close()


async def test_each_tenant_uses_its_own_endpoint_and_credentials(tmp_path: Path) -> None:
    async with simulator("acme") as acme_cloud, simulator("globex") as globex_cloud:
        outbox = await _outbox(tmp_path)
        config = sync_config({"acme": acme_cloud, "globex": globex_cloud}, tmp_path)
        sync = await start_sync(outbox, [ACME, GLOBEX], config)
        acme = await ingest(outbox, ACME, ["inv-1", "inv-2"], 100)
        globex = await ingest(outbox, GLOBEX, ["ahu-1"], 100)
        await until(
            lambda: acme_cloud.unique() == len(acme) and globex_cloud.unique() == len(globex), within=20.0
        )
        await sync.stop()
        await outbox.close()
    # each cloud knows only its own tenant's client: any mix-up would be a 401 or a 403
    for cloud, tenant in ((acme_cloud, "acme"), (globex_cloud, "globex")):
        assert {r.status for r in cloud.requests} == {200}
        assert {r.client for r in cloud.requests} == {tenant}
        assert cloud.cross_tenant == 0 and list(cloud.tokens_issued) == [tenant]


async def test_a_large_backlog_of_one_tenant_does_not_starve_another_tenants_fresh_events(
    tmp_path: Path,
) -> None:
    async with simulator("acme", "globex") as sim:
        sim.faults.latency = 0.02  # every upload takes 20 ms: the backlog needs many of them
        outbox = await _outbox(tmp_path)
        await sim.set_down(True)
        backlog = await ingest(outbox, ACME, [f"inv-{i}" for i in range(10)], 2000)  # 20,000 events
        config = sync_config({"acme": sim, "globex": sim}, tmp_path, batch_size=200, max_concurrent_uploads=1)
        sync = await start_sync(outbox, [ACME, GLOBEX], config)
        await asyncio.sleep(0.2)
        await sim.set_down(False)
        fresh = []
        for start in range(1, 21):  # globex: a few fresh events every 100 ms while acme drains
            fresh += await ingest(outbox, GLOBEX, ["ahu-1"], 2, start=2 * start)
            await asyncio.sleep(0.1)
        await until(lambda: sim.unique("globex") == len(fresh), within=20.0)
        acme_done_when_globex_done = sim.unique("acme")
        await until(lambda: sim.unique("acme") == len(backlog), within=40)
        await sync.stop()
        await outbox.close()
    arrived = sim.tenants["globex"].arrived
    latencies = sorted(arrived[e.id] - e.time for e in fresh)
    assert acme_done_when_globex_done < len(backlog)  # globex was served while acme still had a backlog
    # linger 50 ms + at most one acme upload in flight, with room for a loaded 2-core box; starved, it would
    # wait for the whole backlog (20,000 events at 20 ms per upload: seconds)
    assert latencies[-1] < 1.0, latencies[-5:]
    assert in_order(sim, "acme") and in_order(sim, "globex")


async def test_a_missing_secret_stops_the_module_with_a_message_naming_the_reference(tmp_path: Path) -> None:
    async with simulator("acme") as sim:
        outbox = await _outbox(tmp_path)
        config = sync_config({"acme": sim}, tmp_path)
        config["tenants"]["acme"]["client_secret"] = "env:EDGE_TEST_NOT_SET_ANYWHERE"
        with pytest.raises(AssertionError, match="EDGE_TEST_NOT_SET_ANYWHERE is not set"):
            await start_sync(outbox, [ACME], config)
        await outbox.close()
