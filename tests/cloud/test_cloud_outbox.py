"""The kernel side of cloud sync: batch subscriptions, dead letters, retention (real outboxes of both backends,
`stores`: SQLite files and a private PostgreSQL; no HTTP)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

import orjson
import pytest

from edge.module_host.host import ModuleHost
from edge.outbox import RetentionPolicy
from edge.outbox.retention import Retention
from edge.outbox.store import GroupCommitOutbox
from edge.plugins import LoadedPlugin, Manifest
from edge.sdk.errors import OutboxFull
from edge.sdk.events import OUTBOX_DROPPED, TELEMETRY, Event, OutboxDroppedData, StoredEvent, make_event
from edge.sdk.modules import Health, ModuleContext, Rejected, RetryLater
from edge.sdk.tenancy import TenantContext, tenant_scope
from tests.helpers import until
from tests.outbox_stores import Stores

ACME = TenantContext("acme")
GLOBEX = TenantContext("globex")
TENANTS = {"acme": ACME, "globex": GLOBEX}


def _event(tenant: str, device: str, sequence: int, *, size: int = 0, type: str = TELEMETRY) -> Event:
    """Events of one size whatever their sequence (the quota test counts exactly)."""
    return make_event(
        type=type,
        source=f"/gw/modbus/{device}",
        subject=f"site/{device}",
        tenant=tenant,
        time=time.time(),
        data={
            "device": device,
            "site": "site",
            "points": {"p": {"value": 0, "quality": "good"}},
            "pad": "x" * size,
        },
        device=device,
        sequence=sequence,
    )


async def _flush(outbox: GroupCommitOutbox) -> int:
    """Wait until everything appended so far is committed; returns the last position. The writer takes tenants
    in turns (edge.outbox.fair_queue), so first every queued event is taken, then a durable append of a tenant of
    its own commits after the batch in flight: commits are in order."""
    await until(lambda: outbox.queued == 0, 30, "the writer took every queued event", step=0.001)
    flush = TenantContext("zz-flush")
    with tenant_scope(flush):
        return await outbox.append_durable(_event("zz-flush", "f", 1))


async def _fill(outbox: GroupCommitOutbox, tenant: str, count: int, *, start: int = 1, size: int = 0) -> int:
    """Append `count` events of device d1; returns the last position of the tenant's rows."""
    with tenant_scope(TENANTS[tenant]):
        for seq in range(start, start + count):
            await outbox.append(_event(tenant, "d1", seq, size=size))
    await _flush(outbox)
    with tenant_scope(TENANTS[tenant]):
        rows = await outbox.read_after(0, 1_000_000)
    return rows[-1].position if rows else 0


class Uplink:
    """A scripted batch consumer: records every offer, answers with the next scripted outcome."""

    def __init__(self, script: Sequence[object] = (), **options: object) -> None:
        self.offers: list[list[StoredEvent]] = []
        self.times: list[float] = []
        self.script = list(script)
        self.options = options

    async def on_init(self, context: ModuleContext) -> None:
        context.subscribe_batches(None, self.handle, name="uplink", **self.options)  # type: ignore[arg-type]

    async def on_enable(self) -> None: ...
    async def on_disable(self) -> None: ...
    async def on_health_check(self) -> Health:
        return Health(True)

    async def handle(self, batch: Sequence[StoredEvent]) -> Rejected | None:
        self.offers.append(list(batch))
        self.times.append(time.monotonic())
        outcome = self.script.pop(0) if self.script else None
        if callable(outcome):
            outcome = outcome(batch)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[return-value]

    def delivered(self) -> list[int]:
        return [e.sequence or 0 for offer in self.offers for e in offer]


def _plugin(module: object) -> LoadedPlugin:
    return LoadedPlugin(Manifest("up", "module", "1.0.0", ">=1,<2"), lambda: module)


async def _host(
    stores: Stores, outbox: GroupCommitOutbox, module: object, tenants: Sequence[TenantContext] = (ACME,)
) -> ModuleHost:
    host = ModuleHost(outbox, list(tenants), "gw", stores.data_dir)
    await host.start("up", _plugin(module), {})
    return host


async def test_a_batch_is_acknowledged_only_by_its_outcome(stores: Stores) -> None:
    outbox = stores()
    await outbox.open()
    await _fill(outbox, "acme", 10)
    first_two = lambda b: Rejected({b[1].position: "bad unit", b[4].position: "no such device"})  # noqa: E731
    module = Uplink(
        [RetryLater(0.05, "HTTP 503"), RuntimeError("a bug"), first_two], max_batch=5, max_wait=0.0
    )
    host = await _host(stores, outbox, module)
    await until(lambda: len(module.offers) >= 4, within=5.0)
    await host.stop()

    # RetryLater and a handler bug: the same batch again; then rejected ones become dead letters, rest acked
    assert [[e.sequence for e in o] for o in module.offers[:4]] == [[1, 2, 3, 4, 5]] * 3 + [[6, 7, 8, 9, 10]]
    with tenant_scope(ACME):
        assert await outbox.cursor("module:up:uplink") >= module.offers[3][-1].position
        assert await outbox.backlog("module:up:uplink") == 0
        dead = await outbox.dead_letters()
        assert [(d.event.sequence, d.reason, d.consumer) for d in dead] == [
            (2, "bad unit", "module:up:uplink"),
            (5, "no such device", "module:up:uplink"),
        ]
        assert orjson.loads(dead[0].event.body)["sequence"] == "0000000000000002"
        status = await outbox.consumer_status("module:up:uplink")
        assert status.delivered == 8 and status.last_success is not None
        assert status.last_error == "handler error: RuntimeError: a bug"
    assert host.modules["up"].retries == 2 and host.modules["up"].dead_lettered == 2
    await outbox.close()


async def test_a_batch_waits_for_max_wait_or_max_batch_and_stays_within_one_tenant(stores: Stores) -> None:
    outbox = stores(commit_interval=0.001)
    await outbox.open()
    module = Uplink(max_batch=50, max_wait=0.3)
    host = await _host(stores, outbox, module, [ACME, GLOBEX])
    started = time.monotonic()
    await _fill(outbox, "acme", 3)
    await _fill(outbox, "globex", 120)
    await until(lambda: sum(len(o) for o in module.offers) == 123, within=5.0)
    await host.stop()
    assert all(len({e.tenant for e in offer}) == 1 for offer in module.offers)
    acme = [(o, t) for o, t in zip(module.offers, module.times, strict=True) if o[0].tenant == "acme"]
    assert [len(o) for o, _ in acme] == [3] and acme[0][1] - started >= 0.25  # lingered for more
    assert max(len(o) for o in module.offers) == 50
    await outbox.close()


async def test_replayed_dead_letters_are_offered_again_and_resolved(stores: Stores) -> None:
    outbox = stores()
    await outbox.open()
    await _fill(outbox, "acme", 3)
    module = Uplink([lambda b: Rejected({b[0].position: "schema v2 unknown"})], max_wait=0.0)
    host = await _host(stores, outbox, module)
    await until(lambda: len(module.offers) == 1, within=5.0)
    with tenant_scope(ACME):
        assert len(await outbox.dead_letters()) == 1
        assert await outbox.request_replay() == 1
    await until(lambda: len(module.offers) == 2, within=6.0)  # the consumer looks every 2 s
    assert [e.sequence for e in module.offers[1]] == [1]
    await asyncio.sleep(0.1)
    with tenant_scope(ACME):
        assert await outbox.dead_letters() == []
    await host.stop()
    await outbox.close()


async def test_dead_letters_are_tenant_scoped(stores: Stores) -> None:
    outbox = stores()
    await outbox.open()
    await _fill(outbox, "acme", 1)
    with tenant_scope(ACME):
        row = (await outbox.read_after(0, 1))[0]
        await outbox.dead_letter("c", [(row, "bad")])
    with tenant_scope(GLOBEX):
        assert await outbox.dead_letters() == []
        with pytest.raises(Exception, match="another tenant"):
            await outbox.dead_letter("c", [(row, "bad")])
        assert await outbox.request_replay() == 0
    await outbox.close()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def _dropped_reports(outbox: GroupCommitOutbox, tenant: TenantContext) -> list[OutboxDroppedData]:
    await _flush(outbox)  # reports go through the group commit
    with tenant_scope(tenant):
        rows = await outbox.read_after(0, 10_000, [OUTBOX_DROPPED])
    return [OutboxDroppedData.model_validate(orjson.loads(r.body)["data"]) for r in rows]


async def test_max_age_drops_exactly_what_a_consumer_had_not_received_and_reports_it(stores: Stores) -> None:
    clock = Clock()
    policy = RetentionPolicy(max_age=3600, keep_delivered=60)
    outbox = stores(clock=clock, retention={"acme": policy})
    await outbox.open()
    outbox.hold("cloud", ["acme"])
    outbox.hold("mqtt", ["acme"])
    await _fill(outbox, "acme", 100)
    with tenant_scope(ACME):
        rows = await outbox.read_after(0, 1000)
        outbox.set_cursor("mqtt", rows[-1].position)  # MQTT has everything
        outbox.set_cursor("cloud", rows[29].position)  # the cloud only the first 30
    retention = Retention(outbox, [ACME], "gw")
    clock.now += 120  # past keep_delivered: the 30 everyone had go, silently
    assert await retention.sweep() == {}
    with tenant_scope(ACME):
        assert await outbox.count() == 70 and await outbox.drop_totals() == {}
    clock.now += 3600  # past max_age: the 70 the cloud never had are dropped and counted
    report = await retention.sweep()
    assert [(reason, d.events) for reason, d in report["acme"]] == [("max_age:dropped", 70)]
    reports = await _dropped_reports(outbox, ACME)
    assert [(r.limit, r.action, r.events, r.total_events, r.consumers) for r in reports] == [
        ("max_age", "dropped", 70, 70, ["cloud"])
    ]
    with tenant_scope(ACME):
        assert await outbox.count() == 1  # only the report itself
        assert (await outbox.drop_totals())["max_age:dropped"][0] == 70
    await outbox.close()


async def test_a_wall_clock_step_back_does_not_make_rows_expire_or_linger(stores: Stores) -> None:
    outbox = stores(retention={"acme": RetentionPolicy(max_age=3600)})
    await outbox.open()
    await _fill(outbox, "acme", 5)
    await outbox.close()
    stores.sql("UPDATE outbox SET enqueued = enqueued + 7200")  # as if stored by a clock 2 h in the future
    again = stores(retention={"acme": RetentionPolicy(max_age=3600)})
    await again.open()
    assert again.now() >= time.time() + 7199  # never earlier than what is stored: nothing looks 2 h old
    await _fill(again, "acme", 1, start=6)
    assert await Retention(again, [ACME], "gw").sweep() == {}
    times = [t for (t,) in stores.sql("SELECT enqueued FROM outbox ORDER BY position")]
    assert times == sorted(times)
    await again.close()


@pytest.mark.parametrize("policy", ["drop_oldest", "refuse_newest"])
async def test_the_quota_policy_is_applied_per_tenant_and_counted_exactly(
    stores: Stores, policy: str
) -> None:
    quota = 1 << 20
    limits = {"acme": RetentionPolicy(max_bytes=quota, policy=policy)}  # type: ignore[arg-type]
    outbox = stores(retention=limits)
    await outbox.open()
    outbox.hold("cloud", ["acme", "globex"])  # the cloud is down: nothing is delivered
    size = len(_event("acme", "d1", 1, size=1000).body)
    await _fill(outbox, "acme", 2000, size=1000)  # about 2 MiB: twice the quota
    await _fill(outbox, "globex", 2000, size=1000)  # no limit of its own beyond the 1 GiB default
    retention = Retention(outbox, [ACME, GLOBEX], "gw")
    report = await retention.sweep()
    await _flush(outbox)  # the drop report, exempt from the quota, is committed too: count around it
    with tenant_scope(ACME):
        rows = await outbox.read_after(0, 10_000, [TELEMETRY])
        reported = sum(len(r.body) for r in await outbox.read_after(0, 10_000, [OUTBOX_DROPPED]))
        kept, used = len(rows), sum(len(r.body) for r in rows)
        assert outbox.usage()[1] == used + reported  # usage counts every stored byte
        totals = await outbox.drop_totals()
    fits = quota // size
    if policy == "drop_oldest":
        assert [r for r, _ in report["acme"]] == ["max_bytes:dropped"]
        assert kept == fits and used <= quota
        assert totals["max_bytes:dropped"][0] == 2000 - fits
        with tenant_scope(ACME):
            assert (await outbox.read_after(0, 1))[0].sequence == 2000 - fits + 1  # the newest stayed
    else:
        assert [r for r, _ in report["acme"]] == ["max_bytes:refused"]
        assert kept == fits and totals["max_bytes:refused"][0] == 2000 - fits
        with tenant_scope(ACME):
            assert (await outbox.read_after(0, 1))[0].sequence == 1  # the oldest stayed
            with pytest.raises(OutboxFull):
                await outbox.append_durable(_event("acme", "d1", 9999, size=1000))
    reports = await _dropped_reports(outbox, ACME)
    assert sum(r.events for r in reports) == 2000 - fits
    with tenant_scope(GLOBEX):
        assert await outbox.count() == 2000 and "globex" not in report  # the other tenant is untouched
    await outbox.close()


async def test_delivered_rows_go_only_once_every_holder_passed_them(stores: Stores) -> None:
    clock = Clock()
    outbox = stores(clock=clock, retention={"acme": RetentionPolicy(keep_delivered=0)})
    await outbox.open()
    outbox.hold("mqtt", ["acme"])
    outbox.hold("cloud", ["acme"])
    last = await _fill(outbox, "acme", 10)
    with tenant_scope(ACME):
        outbox.set_cursor("mqtt", last)
    clock.now += 1
    retention = Retention(outbox, [ACME], "gw")
    await retention.sweep()
    with tenant_scope(ACME):
        assert await outbox.count() == 10  # the cloud has not had them
        outbox.set_cursor("cloud", last - 4)
    await retention.sweep()
    with tenant_scope(ACME):
        assert [r.sequence for r in await outbox.read_after(0, 100)] == [7, 8, 9, 10]
        assert outbox.usage()[0] == 4
    assert retention.deleted_delivered == 6
    await outbox.close()


async def test_usage_survives_reopen_and_is_rebuilt_for_an_old_outbox(stores: Stores) -> None:
    outbox = stores()
    await outbox.open()
    await _fill(outbox, "acme", 10, size=100)
    with tenant_scope(ACME):
        before = outbox.usage()
    await outbox.close()
    stores.sql("DELETE FROM tenant_usage")  # as if written before usage was tracked
    again = stores()
    await again.open()
    with tenant_scope(ACME):
        assert again.usage() == before and before[0] == 10
    await again.close()


async def test_finding_the_first_row_stored_since_a_time_agrees_with_a_scan(stores: Stores) -> None:
    clock = Clock()
    outbox = stores(clock=clock, synchronous="off", commit_interval=0)
    await outbox.open()
    rng = random.Random(5)
    for seq in range(1, 400):
        clock.now += rng.choice([0.0, 0.0, 0.5, 2.0])
        tenant = rng.choice(["acme", "acme", "globex"])
        with tenant_scope(TENANTS[tenant]):
            await outbox.append_durable(_event(tenant, "d1", seq))
    rows = stores.sql("SELECT position, enqueued FROM outbox WHERE tenant = 'acme' ORDER BY position")
    with tenant_scope(ACME):
        for cutoff in [rows[0][1] - 1, *(e for _, e in rows[::17]), rows[-1][1] + 0.1]:
            expected = next((p for p, e in rows if e >= cutoff), None)
            assert await outbox.first_position_since(cutoff) == expected, cutoff
    await outbox.close()
