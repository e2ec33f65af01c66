"""The one durable consumer (`edge.outbox.consumer`) against a real outbox of each backend (`stores`): order, types, passing
other types' rows, wake-ups on commit, restarts, tenant isolation, lingering, read-ahead and cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from edge.outbox.consumer import Batch, DurableConsumer
from edge.outbox.store import GroupCommitOutbox
from edge.sdk.events import make_event
from edge.sdk.tenancy import TenantContext, tenant_scope
from tests.outbox_stores import Stores

ACME = TenantContext("acme")
GLOBEX = TenantContext("globex")
ALARM, TELEMETRY = "org.example.alarm", "org.example.telemetry"
CONSUMER = "test:consumer"


@pytest.fixture
async def outbox(stores: Stores) -> AsyncIterator[GroupCommitOutbox]:
    box = stores()
    await box.open()
    yield box
    await box.close()


async def _append(
    outbox: GroupCommitOutbox, type_: str, n: int = 1, tenant: TenantContext = ACME
) -> list[int]:
    """Commit `n` events of `type_` for `tenant`; returns their positions."""
    events = [
        make_event(
            type=type_, source="/t", subject=f"s{i}", tenant=tenant.tenant_id, time=time.time(), data={}
        )
        for i in range(n)
    ]
    with tenant_scope(tenant):  # queued in order, committed together
        return list(await asyncio.gather(*(outbox.append_durable(e) for e in events)))


async def _next(consumer: DurableConsumer, seconds: float = 5.0) -> Batch:
    return await asyncio.wait_for(anext(consumer), seconds)


async def _cursor(outbox: GroupCommitOutbox, tenant: TenantContext = ACME) -> int:
    with tenant_scope(tenant):
        return await outbox.cursor(CONSUMER)


async def test_batches_come_in_order_from_the_stored_cursor(outbox: GroupCommitOutbox) -> None:
    positions = await _append(outbox, ALARM, 10)
    with tenant_scope(ACME):
        outbox.set_cursor(CONSUMER, positions[2])  # done with the first three
    async with DurableConsumer(outbox, ACME, CONSUMER, max_batch=4) as consumer:
        seen: list[int] = []
        while len(seen) < 7:
            batch = await _next(consumer)
            seen += [e.position for e in batch.events]
            consumer.ack(batch)
    assert seen == positions[3:]
    assert await _cursor(outbox) == positions[-1]


async def test_only_the_wanted_types_are_delivered(outbox: GroupCommitOutbox) -> None:
    alarms = []
    for _ in range(3):
        await _append(outbox, TELEMETRY, 2)
        alarms += await _append(outbox, ALARM)
    async with DurableConsumer(outbox, ACME, CONSUMER, types=[ALARM]) as consumer:
        batch = await _next(consumer)
    assert [e.position for e in batch.events] == alarms
    assert {e.type for e in batch.events} == {ALARM}


async def test_other_types_are_passed_only_when_nothing_of_ours_is_pending(outbox: GroupCommitOutbox) -> None:
    first = await _append(outbox, ALARM)
    await _append(outbox, TELEMETRY, 2)
    second = await _append(outbox, ALARM)
    tail = await _append(outbox, TELEMETRY, 2)
    async with DurableConsumer(outbox, ACME, CONSUMER, types=[ALARM], max_batch=1) as consumer:
        batch = await _next(consumer)
        assert batch.events[0].position == first[0]
        assert batch.through == first[0]  # an alarm may still be pending further on: no passing
        consumer.ack(batch)
    assert await _cursor(outbox) == first[0]

    async with DurableConsumer(outbox, ACME, CONSUMER, types=[ALARM], max_batch=10) as consumer:
        batch = await _next(consumer)
        assert [e.position for e in batch.events] == second
        assert batch.through == tail[-1]  # the read saw everything: nothing of ours up to the last row
        assert await _cursor(outbox) == first[0]  # nothing moves before the caller acknowledges
        consumer.ack(batch)
        assert await _cursor(outbox) == tail[-1]  # the telemetry rows are passed: retention may free them

        # with nothing of ours at all, the consumer passes other types' rows on its own while it waits
        more = await _append(outbox, TELEMETRY, 3)
        waiting = asyncio.create_task(anext(consumer))
        deadline = time.monotonic() + 5
        while await _cursor(outbox) != more[-1] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert await _cursor(outbox) == more[-1]
        assert not waiting.done()  # and yields nothing
        waiting.cancel()


async def test_a_commit_wakes_a_waiting_consumer_promptly(outbox: GroupCommitOutbox) -> None:
    async with DurableConsumer(outbox, ACME, CONSUMER, idle=30.0) as consumer:
        waiting = asyncio.create_task(anext(consumer))
        await asyncio.sleep(0.2)  # it read nothing and now waits for a commit
        assert not waiting.done()
        positions = await _append(outbox, ALARM)
        committed = time.monotonic()
        batch = await asyncio.wait_for(waiting, 5)
        woke_after = time.monotonic() - committed
    assert [e.position for e in batch.events] == positions
    assert woke_after < 0.5  # woken by the commit, not by the (here 30 s) bounded wait


async def test_a_commit_by_another_writer_of_a_shared_postgresql_wakes_the_consumer_promptly(
    outbox: GroupCommitOutbox, stores: Stores
) -> None:
    if stores.backend != "postgresql":
        pytest.skip("a SQLite file has one writer (the data directory's instance lock)")
    other = stores()  # another gateway instance: its own connections to the same tables
    await other.open()
    try:
        async with DurableConsumer(outbox, ACME, CONSUMER, idle=30.0) as consumer:
            waiting = asyncio.create_task(anext(consumer))
            await asyncio.sleep(0.2)  # the consumer waits for a commit
            [position] = await _append(other, ALARM)
            committed = time.monotonic()
            batch = await asyncio.wait_for(waiting, 5)
            woke_after = time.monotonic() - committed
    finally:
        await other.close()
    assert [e.position for e in batch.events] == [position]
    assert woke_after < 0.5  # NOTIFY from the other writer, not the 30 s bounded wait


async def test_a_missed_wake_up_costs_at_most_the_bounded_wait(
    outbox: GroupCommitOutbox, stores: Stores
) -> None:
    async with DurableConsumer(outbox, ACME, CONSUMER, idle=0.5) as consumer:
        waiting = asyncio.create_task(anext(consumer))
        await asyncio.sleep(0.1)
        other = stores()  # a commit this outbox's listeners never hear of (on PostgreSQL: a second writer)
        await other.open()
        [position] = await _append(other, ALARM)
        await other.close()
        committed = time.monotonic()
        batch = await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - committed < 1.5  # found by the next look after the bounded wait
    assert batch.events[0].position == position


async def test_nothing_is_lost_across_a_restart(stores: Stores) -> None:
    outbox = stores()
    await outbox.open()
    positions = await _append(outbox, ALARM, 6)
    async with DurableConsumer(outbox, ACME, CONSUMER, max_batch=3) as consumer:
        consumer.ack(await _next(consumer))  # handled and acknowledged
        unacked = await _next(consumer)  # handled, but the gateway stops before acknowledging
        assert [e.position for e in unacked.events] == positions[3:]
    await outbox.close()

    again = stores()
    await again.open()
    try:
        async with DurableConsumer(again, ACME, CONSUMER, max_batch=10) as consumer:
            assert consumer.position == positions[2]
            batch = await _next(consumer)
        assert [e.position for e in batch.events] == positions[3:]  # offered again: at least once
    finally:
        await again.close()


async def test_an_unacknowledged_batch_comes_again_even_after_reading_ahead(
    outbox: GroupCommitOutbox,
) -> None:
    positions = await _append(outbox, ALARM, 5)
    async with DurableConsumer(outbox, ACME, CONSUMER, max_batch=2) as consumer:
        first = await _next(consumer)  # a full batch: the next one is read meanwhile
        await asyncio.sleep(0.05)
        again = await _next(consumer)  # say the broker dropped it: not acknowledged
        assert again.events == first.events
        consumer.ack(again)
        rest: list[int] = []
        while len(rest) < 3:
            batch = await _next(consumer)
            rest += [e.position for e in batch.events]
            consumer.ack(batch)
    assert rest == positions[2:]


async def test_tenants_do_not_wake_each_other(outbox: GroupCommitOutbox) -> None:
    async with (
        DurableConsumer(outbox, ACME, CONSUMER, idle=30.0, yield_idle=True) as acme,
        DurableConsumer(outbox, GLOBEX, CONSUMER, idle=30.0) as globex,
    ):
        acme_turn = asyncio.create_task(anext(acme))
        globex_batch = asyncio.create_task(anext(globex))
        await asyncio.sleep(0.2)
        globex_positions = await _append(outbox, ALARM, 3, tenant=GLOBEX)
        batch = await asyncio.wait_for(globex_batch, 5)
        assert [e.position for e in batch.events] == globex_positions
        assert {e.tenant for e in batch.events} == {"globex"}
        await asyncio.sleep(0.3)
        assert not acme_turn.done()  # globex's commit did not wake acme's consumer (an empty turn would show)
        await _append(outbox, ALARM, tenant=ACME)
        turn = await asyncio.wait_for(acme_turn, 1)  # acme's own commit does, at once
        assert turn.events == []  # the wake-up turn; the row comes next
        batch = await _next(acme, 1)
        assert {e.tenant for e in batch.events} == {"acme"}


async def test_a_partial_batch_lingers_for_more_up_to_max_wait(outbox: GroupCommitOutbox) -> None:
    await _append(outbox, ALARM, 2)
    async with DurableConsumer(outbox, ACME, CONSUMER, max_batch=5, max_wait=2.0) as consumer:
        started = time.monotonic()
        reading = asyncio.create_task(anext(consumer))
        await asyncio.sleep(0.1)
        await _append(outbox, ALARM, 3)
        batch = await asyncio.wait_for(reading, 5)
        assert len(batch.events) == 5  # one full batch, sent as soon as it was full
        assert time.monotonic() - started < 1.5
        consumer.ack(batch)

        await _append(outbox, ALARM)
        started = time.monotonic()
        batch = await _next(consumer)
        assert len(batch.events) == 1
        assert 1.8 < time.monotonic() - started < 4  # nothing more came: it went after max_wait


async def test_max_bytes_caps_a_batch(outbox: GroupCommitOutbox) -> None:
    positions = await _append(outbox, ALARM, 6)
    with tenant_scope(ACME):
        size = len((await outbox.read_after(0, 1))[0].body)
    async with DurableConsumer(outbox, ACME, CONSUMER, max_batch=10, max_bytes=size * 2 + 1) as consumer:
        sizes: list[int] = []
        while sum(sizes) < 6:
            batch = await _next(consumer)
            sizes.append(len(batch.events))
            consumer.ack(batch)
    assert sizes == [2, 2, 2]
    assert await _cursor(outbox) == positions[-1]


async def test_cancelling_a_consumer_leaves_no_task_and_keeps_the_cursor(outbox: GroupCommitOutbox) -> None:
    await _append(outbox, ALARM, 10)
    before = asyncio.all_tasks()
    handled = asyncio.Event()

    async def consume() -> None:
        async with DurableConsumer(outbox, ACME, CONSUMER, max_batch=4) as consumer:
            async for batch in consumer:  # a full batch: the next one is being read ahead
                handled.set()
                await asyncio.sleep(30)  # cancelled while handling: never acknowledged
                consumer.ack(batch)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(handled.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before - {task} == set()
    assert await _cursor(outbox) == 0


async def test_a_cancel_arriving_with_a_wake_up_still_stops_the_consumer(outbox: GroupCommitOutbox) -> None:
    # asyncio.wait_for (Python 3.11) drops a cancellation that lands just as the awaited flag is set; a
    # consumer that missed it would run on and its owner would wait for it forever when stopping
    for spins in range(8):
        started = asyncio.Event()

        async def consume(started: asyncio.Event) -> None:
            async with DurableConsumer(outbox, ACME, CONSUMER, types=[ALARM]) as consumer:
                started.set()
                async for batch in consumer:
                    consumer.ack(batch)

        task = asyncio.create_task(consume(started))
        await started.wait()
        await asyncio.sleep(0.05)  # idle: waiting for a commit
        target = outbox.last_position + 1
        appending = asyncio.create_task(_append(outbox, TELEMETRY))  # wakes it, nothing to deliver
        while outbox.last_position < target:  # the commit listeners have run once this moves
            await asyncio.sleep(0)
        for _ in range(spins):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=3)
        await appending
        assert task in done, f"consumer ignored a cancel {spins} loop turns after a wake-up"
        assert task.cancelled()
