"""The one durable outbox consumer: one consumer name's committed events of one tenant, batch by batch.

Every reader of the outbox (the MQTT publisher, module subscriptions, batch subscriptions, isolated modules'
streams, webhooks) is this loop: read the durable cursor once, read up to N rows of the wanted types after
it, hand them over, move the cursor only once the caller acknowledged them, and when nothing is pending wait
for the tenant's next commit (at most `idle` seconds, so a missed wake-up only ever costs that much).

    async with DurableConsumer(outbox, tenant, "module:billing:uplink", types=("telemetry",)) as batches:
        async for batch in batches:
            await send(batch.events)
            batches.ack(batch)  # not acknowledged: the same events come again (at-least-once)

Rules kept here once:
- Passing: a read that found fewer rows than it asked for saw everything of our types committed before it, so
  the cursor may move past the other types' rows up to there (`Batch.through`), and retention can free them.
  With nothing of ours pending the consumer moves it on its own; otherwise the caller's `ack` does.
- Wake-ups and the feed: one commit listener per store (`_Feeds`) hands every commit to the consumers of the
  store, waking those of the committing tenants. A consumer that is caught up keeps the committed rows it
  wants in memory and takes its batches from there, with no SQLite read (the bytes committed are the bytes
  delivered); one that is behind (a backlog, an unacknowledged batch, more than `4 x max_batch` rows waiting,
  or a commit it did not see whole) reads from SQLite until a read finds it caught up with no commit during
  that read. The flag is cleared before each read, so a commit landing during the read wakes the next wait.
- Lingering: with `max_wait`, a batch that is not full waits up to that long for more rows (`max_bytes`
  caps its size); a full batch goes at once.
- Read-ahead: after a full batch (a backlog) the next one is read while the caller handles this one; it is
  used only if the caller acknowledged the batch (else the next read starts again at the cursor), and
  `rewind()` drops it after a long wait (retention may have removed rows meanwhile).
- Every outbox call runs inside the tenant's scope; leaving the `async with` cancels the read-ahead and
  unregisters the wake-up, so a cancelled consumer leaves nothing behind. Its cursor stays where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from edge.outbox import CommitListener, WakeListener
from edge.sdk.events import Event, StoredEvent
from edge.sdk.grid import housekeeping_tick
from edge.sdk.tenancy import TenantContext, tenant_scope

__all__ = ["Batch", "ConsumerOutbox", "DurableConsumer"]

IDLE_WAIT = 1.0  # seconds an idle consumer waits for a commit before it looks again on its own


class ConsumerOutbox(Protocol):
    """What a durable consumer needs of an outbox (tenant-scoped calls: the current tenant's rows)."""

    @property
    def last_position(self) -> int: ...
    def add_commit_listener(self, listener: CommitListener) -> None: ...
    def add_wake_listener(self, listener: WakeListener) -> None: ...
    async def cursor(self, consumer: str) -> int: ...
    def set_cursor(self, consumer: str, position: int) -> None: ...
    async def read_after(
        self, position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[StoredEvent]: ...


@dataclass(frozen=True, slots=True)
class Batch:
    """Committed events of one tenant in outbox order; empty only for `DurableConsumer(yield_idle=True)`."""

    events: list[StoredEvent]
    after: int  # the position it was read after
    through: int  # every row up to here was examined: acknowledging moves the cursor here


class _Feeds:
    """The one commit listener of a store: hands each commit to the consumers of the committing tenants.

    A consumer that is caught up keeps the rows in memory (its feed) and reads nothing back from the store;
    one that is behind, or lost track of a commit, reads from the store until it has caught up again. Another
    process's commit to a shared store (PostgreSQL) wakes the tenant's consumers, which read it from there."""

    def __init__(self, store: ConsumerOutbox) -> None:
        self._consumers: dict[str, set[DurableConsumer]] = {}
        store.add_commit_listener(self._on_commit)
        store.add_wake_listener(self._on_wake)

    def _on_wake(self, tenants: Iterable[str]) -> None:
        for tenant in tenants:
            for consumer in self._consumers.get(tenant, ()):
                consumer.woken()

    def _on_commit(self, events: Sequence[Event], last_position: int) -> None:
        consumers = self._consumers
        if not consumers:
            return
        first = last_position - len(events) + 1
        rows: dict[str, list[StoredEvent]] = {tenant: [] for tenant in consumers}
        for offset, e in enumerate(events):
            mine = rows.get(e.tenant)
            if mine is not None:
                mine.append(
                    StoredEvent(
                        first + offset,
                        e.id,
                        e.tenant,
                        e.type,
                        e.subject,
                        e.device,
                        e.sequence,
                        e.time,
                        e.body,
                    )
                )
        for tenant, watching in consumers.items():
            for consumer in watching:
                consumer.committed(first, last_position, rows[tenant])

    def watch(self, tenant: str, consumer: DurableConsumer) -> None:
        self._consumers.setdefault(tenant, set()).add(consumer)

    def unwatch(self, tenant: str, consumer: DurableConsumer) -> None:
        watching = self._consumers.get(tenant)
        if watching is not None:
            watching.discard(consumer)
            if not watching:
                del self._consumers[tenant]


_registries: weakref.WeakKeyDictionary[object, _Feeds] = weakref.WeakKeyDictionary()


def _feeds(outbox: ConsumerOutbox, tenant: str) -> _Feeds:
    """The feeds of the store holding `tenant`'s rows: positions are per database file, so a consumer listens
    to its own store only (an `OutboxRouter` holds several)."""
    store_of = getattr(outbox, "store_of", None)
    store: ConsumerOutbox = store_of(tenant) if store_of is not None else outbox
    registry = _registries.get(store)
    if registry is None:
        registry = _registries[store] = _Feeds(store)
    return registry


class DurableConsumer:
    """An async iterator of one consumer's committed batches of one tenant; use it inside `async with`."""

    def __init__(
        self,
        outbox: ConsumerOutbox,
        tenant: TenantContext,
        name: str,
        *,
        types: Sequence[str] | None = None,
        max_batch: int = 100,
        max_wait: float = 0.0,
        max_bytes: int | None = None,
        idle: float = IDLE_WAIT,
        yield_idle: bool = False,
    ) -> None:
        """`types`: only these event types (None or empty: all). `yield_idle`: also yield an empty batch after
        each wait that brought nothing, so the caller can do periodic work between batches."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._outbox = outbox
        self._tenant = tenant
        self.name = name
        self._types = tuple(types or ()) or None
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._max_bytes = max_bytes
        self._idle = idle
        self._yield_idle = yield_idle
        self._position = 0
        self._flag: asyncio.Event | None = None
        self._watching = False
        # The feed: while caught up, the tenant's committed rows of our types in (_fed_after, _fed_through],
        # handed over by the commit listener. _fed_through < 0: not caught up, read from SQLite.
        self._fed: list[StoredEvent] = []
        self._fed_after = -1
        self._fed_through = -1
        self._feed_limit = max(4 * max_batch, 1000)  # beyond this the consumer counts as behind
        self._type_set = frozenset(self._types) if self._types else None
        self._ahead: tuple[int, asyncio.Task[Batch]] | None = None  # (read after, read)

    @property
    def position(self) -> int:
        """The acknowledged position: everything up to here is done."""
        return self._position

    async def __aenter__(self) -> Self:
        self._flag = asyncio.Event()
        _feeds(self._outbox, self._tenant.tenant_id).watch(
            self._tenant.tenant_id, self
        )  # before the first read
        self._watching = True
        with tenant_scope(self._tenant):
            self._position = await self._outbox.cursor(self.name)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._drop_ahead()
        if self._watching:
            _feeds(self._outbox, self._tenant.tenant_id).unwatch(self._tenant.tenant_id, self)
            self._watching = False
        self._flag = None
        self._lose_track()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Batch:
        if self._flag is None:
            raise RuntimeError("iterate a DurableConsumer inside `async with`")
        while True:
            batch = await self._take_ahead()
            if batch is None:
                batch = await self._fill(self._position)
            if batch.events:
                if len(batch.events) >= self._max_batch:  # a backlog: read the next batch during this one
                    last = batch.events[-1].position
                    self._ahead = (last, asyncio.create_task(self._fill(last)))
                return batch
            if batch.through > self._position:  # nothing of ours up to there: move on, retention may free it
                self.ack(batch)
            if not await self._sleep(self._idle_wait()):
                # no commit heard for a whole `idle`: look in SQLite itself, in case one went unheard
                self._lose_track()
            if self._yield_idle:
                return Batch([], self._position, self._position)

    def ack(self, batch: Batch) -> None:
        """The caller is done with `batch` (handled, or refused for good): move the durable cursor past it."""
        if batch.through > self._position:
            self._position = batch.through
            with tenant_scope(self._tenant):
                self._outbox.set_cursor(self.name, batch.through)

    def rewind(self) -> None:
        """Drop what was read ahead: the next batch is read fresh after the cursor (after a long wait,
        retention may have removed rows since)."""
        if self._ahead is not None:
            _discard(self._ahead[1])
            self._ahead = None
        self._lose_track()

    def committed(self, first: int, last: int, rows: list[StoredEvent]) -> None:
        """The commit listener's call: positions first..last were committed; `rows` are the tenant's among them."""
        if self._fed_through >= 0:
            if self._fed_through != first - 1:  # a commit went by unseen (the read that caught up began late)
                self._lose_track()
            else:
                wanted = rows if self._type_set is None else [r for r in rows if r.type in self._type_set]
                if len(self._fed) + len(wanted) > self._feed_limit:  # not keeping up: read from SQLite
                    self._lose_track()
                else:
                    self._fed.extend(wanted)
                    self._fed_through = last
        if rows and self._flag is not None:
            self._flag.set()

    def woken(self) -> None:
        """Another process committed rows of our tenant: they are not in the feed, so read from the store."""
        self._lose_track()
        if self._flag is not None:
            self._flag.set()

    def _lose_track(self) -> None:
        self._fed = []
        self._fed_after = self._fed_through = -1

    def _take_fed(self, after: int, want: int) -> tuple[list[StoredEvent], int] | None:
        """Up to `want` rows after `after` from the feed, and how far that examined; None when the feed does not
        continue exactly at `after` (behind, or a batch was not acknowledged): then SQLite answers."""
        if self._fed_through < 0 or after != self._fed_after:
            return None
        if self._flag is not None:
            self._flag.clear()  # what woke us is taken now; the next commit sets it again
        fed = self._fed
        if len(fed) <= want:
            rows, self._fed = fed, []
            passed = self._fed_through
        else:
            rows, self._fed = fed[:want], fed[want:]
            passed = rows[-1].position
        self._fed_after = passed
        return rows, passed

    async def _read(self, after: int, want: int) -> tuple[list[StoredEvent], int]:
        """Rows of ours after `after` (at most `want`) and the position up to which every row was examined."""
        fed = self._take_fed(after, want)
        if fed is not None:
            return fed
        outbox, flag = self._outbox, self._flag
        assert flag is not None
        with tenant_scope(self._tenant):
            scanned = outbox.last_position  # committed before the read, so the read sees all of it
            flag.clear()  # before the read: a commit landing during it must wake the next wait
            rows = await outbox.read_after(after, want, self._types)
            if len(rows) < want:
                passed = max(rows[-1].position if rows else after, scanned)
                if outbox.last_position == scanned:  # no commit during the read: caught up, feed from here
                    self._fed, self._fed_after, self._fed_through = [], passed, passed
                return rows, passed
        return rows, rows[-1].position

    async def _take_ahead(self) -> Batch | None:
        """The batch read ahead, if it follows what the caller acknowledged (else it is read again)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        start, task = ahead
        if start != self._position:  # the batch before it was not acknowledged: read again at the cursor
            _discard(task)
            return None
        return await task  # cancelling us cancels the read too

    async def _drop_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            _discard(ahead[1])
            await asyncio.wait([ahead[1]])  # our own cancellation still propagates

    async def _fill(self, position: int) -> Batch:
        """Up to `max_batch` events after `position`, lingering up to `max_wait` for a full batch."""
        events: list[StoredEvent] = []
        size, after = 0, position
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            want = self._max_batch - len(events)
            rows, passed = await self._read(after, want)
            for row in rows:
                if events and self._max_bytes is not None and size + len(row.body) > self._max_bytes:
                    self._lose_track()  # the rest waits: the next batch is read from SQLite
                    return Batch(events, position, events[-1].position)  # full by bytes
                events.append(row)
                size += len(row.body)
            after = passed
            if len(events) >= self._max_batch or not events:
                return Batch(events, position, passed)
            if deadline is None:
                deadline = loop.time() + self._max_wait
            remaining = deadline - loop.time()
            if remaining <= 0:
                return Batch(events, position, passed)
            await self._sleep(remaining)

    def _idle_wait(self) -> float:
        """Seconds to wait for a commit before looking on its own: about `idle`, ending on the housekeeping
        grid (edge.sdk.grid). Every idle consumer then looks in the same wakeup as the gateway's other periodic
        work; and at polls of the same period its wait no longer races the next poll round's commit."""
        now = asyncio.get_running_loop().time()
        return housekeeping_tick(now + self._idle / 2, self._idle) - now

    async def _sleep(self, seconds: float) -> bool:
        """Wait for a commit of the tenant (True) or `seconds` (False); the flag was cleared before the last
        read, so none is missed."""
        assert self._flag is not None
        # not asyncio.wait_for: on Python 3.11 it drops a cancel that lands as the flag is set, and the consumer
        # would run on while its owner waits for it to stop
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._flag.wait()
        return self._flag.is_set()


def _discard(task: asyncio.Task[Batch]) -> None:
    """Cancel a read nobody will use; its outcome is retrieved so asyncio does not warn about it."""
    task.cancel()
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
