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
- Wake-ups: one commit listener per outbox (`_Wakeups`), waking only the consumers of the committing tenants.
  The flag is cleared before each read, so a commit landing during the read wakes the next wait.
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


class _Wakeups:
    """The one commit (and wake) listener of an outbox: sets the flags of the consumers of each committing
    tenant, for this process's commits and, on a shared PostgreSQL, for other processes' too."""

    def __init__(self, outbox: ConsumerOutbox) -> None:
        self._flags: dict[str, set[asyncio.Event]] = {}
        outbox.add_commit_listener(self._on_commit)
        outbox.add_wake_listener(self._wake)  # commits of other processes sharing the store

    def _on_commit(self, events: Sequence[Event], last_position: int) -> None:
        if self._flags:
            self._wake({e.tenant for e in events})

    def _wake(self, tenants: Iterable[str]) -> None:
        flags = self._flags
        for tenant in tenants:
            for flag in flags.get(tenant, ()):
                flag.set()

    def watch(self, tenant: str) -> asyncio.Event:
        flag = asyncio.Event()
        self._flags.setdefault(tenant, set()).add(flag)
        return flag

    def unwatch(self, tenant: str, flag: asyncio.Event) -> None:
        flags = self._flags.get(tenant)
        if flags is not None:
            flags.discard(flag)
            if not flags:
                del self._flags[tenant]


_registries: weakref.WeakKeyDictionary[object, _Wakeups] = weakref.WeakKeyDictionary()


def _wakeups(outbox: ConsumerOutbox) -> _Wakeups:
    registry = _registries.get(outbox)
    if registry is None:
        registry = _registries[outbox] = _Wakeups(outbox)
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
        self._ahead: tuple[int, asyncio.Task[Batch]] | None = None  # (read after, read)

    @property
    def position(self) -> int:
        """The acknowledged position: everything up to here is done."""
        return self._position

    async def __aenter__(self) -> Self:
        self._flag = _wakeups(self._outbox).watch(self._tenant.tenant_id)  # before the first read
        with tenant_scope(self._tenant):
            self._position = await self._outbox.cursor(self.name)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._drop_ahead()
        if self._flag is not None:
            _wakeups(self._outbox).unwatch(self._tenant.tenant_id, self._flag)
            self._flag = None

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
            await self._sleep(self._idle)
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
        """Read up to `max_batch` events after `position`, lingering up to `max_wait` for a full batch."""
        outbox, flag = self._outbox, self._flag
        assert flag is not None
        events: list[StoredEvent] = []
        size, passed, after = 0, position, position
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            with tenant_scope(self._tenant):
                scanned = outbox.last_position  # committed before the read, so the read sees all of it
                want = self._max_batch - len(events)
                flag.clear()  # before the read: a commit landing during it must wake the next wait
                rows = await outbox.read_after(after, want, self._types)
            for row in rows:
                if events and self._max_bytes is not None and size + len(row.body) > self._max_bytes:
                    return Batch(events, position, events[-1].position)  # full by bytes: the rest waits
                events.append(row)
                size += len(row.body)
            if rows:
                after = rows[-1].position
            passed = max(after, scanned) if len(rows) < want else after
            if len(events) >= self._max_batch or not events:
                return Batch(events, position, passed)
            if deadline is None:
                deadline = loop.time() + self._max_wait
            remaining = deadline - loop.time()
            if remaining <= 0:
                return Batch(events, position, passed)
            await self._sleep(remaining)

    async def _sleep(self, seconds: float) -> None:
        """Wait for a commit of the tenant; the flag was cleared before the last read, so none is missed."""
        assert self._flag is not None
        # not asyncio.wait_for: on Python 3.11 it drops a cancel that lands as the flag is set, and the consumer
        # would run on while its owner waits for it to stop
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._flag.wait()


def _discard(task: asyncio.Task[Batch]) -> None:
    """Cancel a read nobody will use; its outcome is retrieved so asyncio does not warn about it."""
    task.cancel()
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
