"""The outbox engine both storage backends share: group commit, admission, cursors, dead letters, retention.

`GroupCommitOutbox` is the whole outbox contract written once; a backend (`edge.outbox.sqlite`,
`edge.outbox.postgres`) supplies its connections, its dialect (`edge.outbox.schema.Statements`) and its three
write transactions, each one call (`_write_batch`, `_write_statements`, `_delete_chunk`): on SQLite one hop to
the writer's thread, on PostgreSQL one transaction of pipelined statements. Everything above the outbox types against
`edge.outbox.OutboxStore`, so the gateway, consumers and modules never learn which database they talk to.

One writer task group-commits appended events and only then tells its listeners, which publish: an event is
acknowledged (`append_durable` returns, listeners run) only after its transaction committed. Consumers (the
MQTT publisher, modules, cloud sync) read forward from their own durable cursor, so anyone who missed
messages is replayed from here. Positions are handed out in commit order (the backend numbers a batch
inside the committing transaction), so a reader that sees position N has every committed row below it.

Every tenant-owned read goes through `edge.outbox.schema.tenant_filter`, the one place that turns the current
tenant context into a WHERE clause.

Rows leave the outbox only through retention (`edge.outbox.retention`): once every consumer that holds the
tenant's rows (`hold`) has passed them, or by the tenant's explicit limits (`max_age`, `max_bytes` with
`drop_oldest`), which are counted. A tenant whose policy is `refuse_newest` has new events refused (counted)
while its quota is full. Consumers may refuse single events: those go to `dead_letters` with the reason.

Times written here (`enqueued`, dead-letter and status times) come from the outbox clock: wall time anchored
when the outbox opens (never earlier than anything already stored) and advanced by the monotonic clock, so a
wall-clock step while the gateway runs never makes a row look older or younger than it is (reliability T10).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict, cast

from edge.outbox import CommitListener, ConsumerStatus, DeadLetter, Dropped, RetentionPolicy, WakeListener
from edge.outbox.fair_queue import TenantQueue
from edge.outbox.inspect import OutboxInspector
from edge.outbox.schema import DEAD_LETTER_COLUMNS, EVENT_COLUMNS, Statements, tenant_filter
from edge.sdk.backoff import Backoff
from edge.sdk.errors import EdgeError, NoTenantContext, OutboxFull
from edge.sdk.events import Event, StoredEvent
from edge.sdk.tenancy import current_tenant

__all__ = [
    "DELETE_CHUNK",
    "CommitBatch",
    "CommitFence",
    "FencedOut",
    "GroupCommitOutbox",
    "OutboxClock",
    "StoreOptions",
    "Transaction",
]

log = logging.getLogger(__name__)

# seconds after a consumer moved its cursor before the writer persists it on its own; a commit within that
# time carries it (at 1 s polls, the next poll's commit: half a second of margin, or the two race and the flush
# costs a transaction and a wakeup of its own), so an idle second costs no transaction of its own
_CURSOR_FLUSH_INTERVAL = 1.5
DELETE_CHUNK = 10_000  # rows per retention transaction: the writer is never blocked for long

Row = tuple[Any, ...]
Cursors = dict[tuple[str, str], int]  # (consumer, tenant) -> position
# (consumer, tenant) -> [last_success, last_failure, last_error, delivered]
Statuses = dict[tuple[str, str], list[Any]]


class _FlushRequest:
    """Queued to make an idle writer persist the consumers' cursors and status."""


_FLUSH = _FlushRequest()
_Queued = tuple[Event, "asyncio.Future[int] | None"] | _FlushRequest


def _tenant_of(item: _Queued) -> str:
    """The queue a queued item waits in: its event's tenant; a cursor flush request goes in the kernel's own."""
    return item[0].tenant if isinstance(item, tuple) else ""


@dataclass(frozen=True, slots=True)
class CommitBatch:
    """What one group commit writes, in one transaction: events (without positions: the backend numbers them
    in commit order), devices' last sequences, usage per tenant, and the consumers' pending progress."""

    rows: list[Row]  # (id, tenant, type, subject, device, sequence, time, enqueued, body)
    sequences: dict[tuple[str, str], int]
    usage: dict[str, list[int]]  # tenant -> [events, bytes]
    cursors: Cursors
    status: Statuses
    # cluster mode on a shared outbox: called inside the transaction before anything is written; returns the
    # batch without the events of devices whose leases are lost (GroupCommitOutbox.fence)
    fenced: Callable[[Transaction], Awaitable[CommitBatch]] | None = None


class Transaction(Protocol):
    """The open transaction of a group commit, as a `CommitFence` reads it (`?` placeholders in every dialect)."""

    async def rows(self, query: str, params: Sequence[object] = ()) -> list[Row]: ...


class CommitFence(Protocol):
    """Cluster mode on a shared outbox (edge/cluster/fence.py): asked inside each committing transaction which
    of the batch's devices this instance no longer owns; their events are not stored."""

    async def refused(self, tx: Transaction, devices: set[str]) -> set[str]: ...


class FencedOut(EdgeError):
    """An event not stored: its device's lease is no longer this instance's (cluster mode)."""


def _check_owner(event: Event) -> None:
    """Tenant data is written only inside its own tenant's context."""
    tenant = current_tenant().tenant_id
    if event.tenant != tenant:
        raise NoTenantContext(f"event for tenant {event.tenant!r} written in the context of {tenant!r}")


class OutboxClock:
    """Wall time that does not step while the process runs: anchored once, advanced by the monotonic clock."""

    def __init__(self) -> None:
        self._wall = time.time()
        self._mono = time.monotonic()

    def not_before(self, floor: float) -> None:
        """Never earlier than `floor` (the newest time already stored): a clock set back while we were down."""
        now = self()
        if now < floor:
            self._wall += floor - now

    def __call__(self) -> float:
        return self._wall + (time.monotonic() - self._mono)


class StoreOptions(TypedDict, total=False):
    """Options every backend takes (`GroupCommitOutbox.__init__`)."""

    commit_interval: float  # seconds a group commit waits for more events
    commit_max_events: int
    queue_size: int  # appended, not yet committed events before `append` waits (back-pressure)
    retention: dict[str, RetentionPolicy] | None  # tenant -> its limits
    clock: Callable[[], float] | None  # the outbox clock (tests); default OutboxClock


def first_since_search(
    enqueued: float, last_position: int
) -> Generator[int, tuple[int, float] | None, int | None]:
    """The binary search behind `first_position_since`, apart from how rows are read: it yields a position and is
    sent the first row at or after it, (position, enqueued) or None; it returns the answer."""
    first = yield 0
    if first is None or first[1] >= enqueued:
        return first[0] if first else None
    low, high = first[0], last_position + 1  # the row at `low` is older; the answer is after it
    while high - low > 1:
        row = yield (low + high) // 2
        if row is None or row[1] >= enqueued:
            high = (low + high) // 2
        else:
            low = row[0]
    row = yield high
    return row[0] if row is not None and row[1] >= enqueued else None


class GroupCommitOutbox(ABC):
    """The outbox contract over an abstract database (see the module docs); subclasses are the backends."""

    def __init__(
        self,
        statements: Statements,
        *,
        commit_interval: float = 0.002,
        commit_max_events: int = 1000,
        queue_size: int = 20_000,
        retention: dict[str, RetentionPolicy] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._sql = statements
        self._commit_interval = commit_interval
        self._commit_max = commit_max_events
        # one bounded FIFO per tenant, taken in turns: a tenant flooding the writer blocks only itself
        self._queue: TenantQueue[_Queued] = TenantQueue(queue_size, _tenant_of)
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flush_requested = False  # a _FLUSH marker is in the queue
        self._listeners: list[CommitListener] = []
        self._wake_listeners: list[WakeListener] = []  # commits of other processes (backends that share)
        self._pending_cursors: dict[tuple[str, str], int] = {}
        # What this process knows without a query, for `backlog` of a consumer that is caught up: the newest
        # position it committed per tenant, and the furthest each (consumer, tenant) cursor was seen or moved
        self._tenant_last: dict[str, int] = {}
        self._cursor_seen: dict[tuple[str, str], int] = {}
        # (consumer, tenant) -> [last_success, last_failure, last_error, delivered], persisted with the cursors
        self._pending_status: dict[tuple[str, str], list[Any]] = {}
        self._policies = dict(retention or {})
        self._holders: dict[str, set[str]] = {}  # tenant -> consumers that must pass a row before it may go
        self._usage: dict[str, list[int]] = {}  # tenant -> [events, bytes] committed
        self._queued_bytes: dict[str, int] = {}  # tenant -> bytes appended, not yet committed
        self._refused: dict[str, Dropped] = {}  # tenant -> refused since the last retention sweep
        self._clock: Callable[[], float] = clock or OutboxClock()
        self._lock = asyncio.Lock()  # one transaction at a time on the writer connection
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._next_position = 1
        self.fence: CommitFence | None = None  # cluster mode on a shared database
        self.fenced_events = 0
        self.committed_events = 0
        self.commits = 0
        self.commit_failures = 0
        self.last_position = 0

    # ---- what a backend supplies -------------------------------------------------------------------------

    _sole_writer = False  # only this process appends to the store (a SQLite file; not a shared PostgreSQL)

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the rows live, for messages (a file, or a PostgreSQL database and schema; never a password)."""

    @abstractmethod
    def inspector(self, *, writable: bool = False) -> OutboxInspector:
        """A blocking view of the same storage for status pages (`edge sync status`, /v1/sync)."""

    @abstractmethod
    async def _connect(self) -> None:
        """Bring the schema to this release's version and open the writer and reader connections."""

    @abstractmethod
    async def _disconnect(self) -> None: ...

    @abstractmethod
    async def _write_batch(self, batch: CommitBatch) -> int:
        """Commit `batch` in one transaction; returns the first of its consecutive positions, handed out in
        commit order. Other processes sharing the store are told which tenants got rows."""

    @abstractmethod
    async def _write_statements(self, query: str, params: Sequence[Sequence[object]]) -> int:
        """One statement for each parameter set, in one transaction; returns the rows changed."""

    @abstractmethod
    async def _delete_chunk(
        self, tenant: str, position: int, delivered_through: int, reason: str | None
    ) -> tuple[int, int, int, Dropped]:
        """Delete up to `DELETE_CHUNK` of the tenant's rows up to `position` in one transaction, updating its
        usage and counting those after `delivered_through` as dropped under `reason`: (last position deleted,
        events, bytes, dropped)."""

    @abstractmethod
    async def _read(self, query: str, params: Sequence[object]) -> list[Row]:
        """One query on the reader connection, executed and fetched in one step: a statement left open would
        hold an older snapshot, and a consumer could pass rows it never saw (tests/reliability)."""

    # ---- lifecycle -------------------------------------------------------------------------------------

    async def open(self) -> None:
        await self._connect()
        # Positions never go back, even when retention emptied the outbox: a consumer's cursor (or a dead letter)
        # past the newest row would otherwise hide every new event from it.
        (top, newest), *_ = await self._read(self._sql.head, ())
        self.last_position = int(top)
        self._next_position = self.last_position + 1
        if isinstance(self._clock, OutboxClock) and newest is not None:
            self._clock.not_before(float(newest))
        if self.last_position and not (await self._read("SELECT COUNT(*) FROM tenant_usage", ()))[0][0]:
            async with self._lock:  # an outbox from before usage was tracked
                await self._write_statements(self._sql.rebuild_usage, [()])
        rows = await self._read("SELECT tenant, events, bytes FROM tenant_usage", ())
        self._usage = {str(t): [int(e), int(b)] for t, e, b in rows}
        self._connected = True
        self._task = asyncio.create_task(self._write_loop(), name="outbox-writer")

    async def close(self) -> None:
        """Commit everything already appended, then close."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._connected:
            await self._flush_cursors()
            self._connected = False
        await self._disconnect()

    def now(self) -> float:
        """The outbox clock (see the module docs)."""
        return self._clock()

    # ---- writing ---------------------------------------------------------------------------------------

    async def append(self, event: Event) -> None:
        """Queue for the next group commit. Under a full `refuse_newest` quota the event is refused and
        counted (reported by the retention sweep) instead."""
        _check_owner(event)
        if self._admit(event):
            await self._queue.put((event, None))

    async def append_durable(self, event: Event) -> int:
        """Append and wait for the commit; raises `OutboxFull` if the tenant's quota refuses the event."""
        _check_owner(event)
        if not self._admit(event):
            raise OutboxFull(event.tenant, "outbox quota reached (policy refuse_newest); event not stored")
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._queue.put((event, done))
        return await done

    async def append_report(self, event: Event) -> None:
        """Kernel reports about the outbox itself (drop counts): exempt from the quota, or a full tenant
        could never be told why its events are missing."""
        _check_owner(event)
        self._queued_bytes[event.tenant] = self._queued_bytes.get(event.tenant, 0) + len(event.body)
        await self._queue.put((event, None))

    def _admit(self, event: Event) -> bool:
        tenant, size = event.tenant, len(event.body)
        policy = self._policies.get(tenant)
        queued = self._queued_bytes.get(tenant, 0)
        if policy is not None and policy.policy == "refuse_newest":
            used = self._usage.get(tenant, (0, 0))[1] + queued
            if used + size > policy.max_bytes:
                self._refused[tenant] = self._refused.get(tenant, Dropped()) + Dropped(
                    1, size, event.time, event.time
                )
                return False
        self._queued_bytes[tenant] = queued + size
        return True

    def add_wake_listener(self, listener: WakeListener) -> None:
        self._wake_listeners.append(listener)

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def _write_loop(self) -> None:
        """Group commits: the first event waits `commit_interval` for the rest of its burst (a poll round of
        every device), then everything queued (up to `commit_max_events`) is committed in one transaction.
        An idle writer waits on the queue alone, with no timer: a cursor flush is requested through it."""
        queue = self._queue
        while True:
            first = await queue.get()
            if isinstance(first, _FlushRequest):
                self._flush_requested = False
                try:
                    await self._flush_cursors()
                finally:
                    queue.task_done()
                continue
            if self._commit_interval > 0 and queue.qsize() < self._commit_max - 1:
                await asyncio.sleep(self._commit_interval)  # linger: the burst joins this commit
            batch: list[tuple[Event, asyncio.Future[int] | None]] = [first]
            flushes = 0
            while len(batch) < self._commit_max and not queue.empty():
                item = queue.get_nowait()
                if isinstance(item, _FlushRequest):  # this commit writes the pending cursors anyway
                    self._flush_requested = False
                    flushes += 1
                else:
                    batch.append(item)
            try:
                await self._commit_until_done(batch)
            finally:
                for _ in range(len(batch) + flushes):
                    queue.task_done()

    def _schedule_flush(self) -> None:
        """Persist pending cursors and status within `_CURSOR_FLUSH_INTERVAL` if no commit carries them first."""
        if self._flush_timer is None and self._task is not None:
            # the writer's loop: a cursor may be moved from synchronous code between two runs of it
            self._flush_timer = self._task.get_loop().call_later(_CURSOR_FLUSH_INTERVAL, self._request_flush)

    def _request_flush(self) -> None:
        self._flush_timer = None
        if (self._pending_cursors or self._pending_status) and not self._flush_requested:
            try:
                self._queue.put_nowait(_FLUSH)
            except asyncio.QueueFull:  # the writer is busy committing, and each commit writes them
                return
            self._flush_requested = True

    async def _commit_until_done(self, batch: list[tuple[Event, asyncio.Future[int] | None]]) -> None:
        """Commit a batch, retrying for as long as the database refuses it: appended events are never dropped.

        Meanwhile the bounded queue fills up and `append` blocks, which slows the producers down."""
        try:
            await self._commit(batch)  # the common case: no retry state to build
            return
        except Exception as exc:  # disk full, I/O error, locked file, server gone: keep the batch, try again
            self.commit_failures += 1
            log.error("outbox commit of %d events failed: %r; retrying until it succeeds", len(batch), exc)
        backoff = Backoff(0.1, 1.0)  # producers are held meanwhile: resume within a second once space returns
        while True:
            await asyncio.sleep(backoff.next_delay())
            try:
                await self._commit(batch)
            except Exception:
                self.commit_failures += 1
                continue
            log.warning("outbox commits succeed again after %d failed attempts", backoff.attempts)
            return

    async def _commit(self, batch: list[tuple[Event, asyncio.Future[int] | None]]) -> None:
        now = self._clock()
        rows, sequences, usage = _prepare(batch, now)
        async with self._lock:
            cursors, status = self._take_pending()
            kept = batch

            async def fenced(tx: Transaction) -> CommitBatch:
                """Inside the transaction, under the lease rows' lock: a takeover waits for this commit."""
                nonlocal kept, rows, sequences, usage
                assert self.fence is not None
                # a device's sequenced events: those its owner's poller wrote
                devices = {e.device for e, _ in batch if e.device is not None and e.sequence is not None}
                refused = await self.fence.refused(tx, devices) if devices else set()
                if refused:
                    kept = self._drop_fenced(batch, refused)
                    rows, sequences, usage = _prepare(kept, now)
                return CommitBatch(rows, sequences, usage, cursors, status)

            fence = fenced if self.fence is not None else None
            try:  # the whole transaction in one call of the backend
                first = await self._write_batch(CommitBatch(rows, sequences, usage, cursors, status, fence))
            except BaseException:
                self._restore_pending(cursors, status)
                raise
        batch = kept
        for tenant, (n, b) in usage.items():
            counts = self._usage.setdefault(tenant, [0, 0])
            counts[0] += n
            counts[1] += b
            self._queued_bytes[tenant] = max(0, self._queued_bytes.get(tenant, 0) - b)
        self._next_position = first + len(batch)
        self.last_position = self._next_position - 1
        self.commits += 1
        self.committed_events += len(batch)
        tenant_last = self._tenant_last
        for offset, (event, waiter) in enumerate(batch):
            tenant_last[event.tenant] = first + offset
            if waiter is not None and not waiter.done():
                waiter.set_result(first + offset)
        events = [e for e, _ in batch]
        for listener in self._listeners:
            listener(events, self.last_position)

    def _drop_fenced(
        self, batch: list[tuple[Event, asyncio.Future[int] | None]], refused: set[str]
    ) -> list[tuple[Event, asyncio.Future[int] | None]]:
        kept = []
        for event, waiter in batch:
            if event.sequence is None or event.device not in refused:
                kept.append((event, waiter))
                continue
            self.fenced_events += 1
            self._queued_bytes[event.tenant] = max(
                0, self._queued_bytes.get(event.tenant, 0) - len(event.body)
            )
            if waiter is not None and not waiter.done():
                waiter.set_exception(FencedOut(f"device {event.device}: lease lost; event not stored"))
        log.warning(
            "outbox: %d events of devices %s not stored: their leases are lost",
            len(batch) - len(kept),
            sorted(refused),
        )
        return kept

    # ---- cursors, consumer status and sequences ----------------------------------------------------------

    def set_cursor(self, consumer: str, position: int) -> None:
        """Record that `consumer` is done up to `position` for the current tenant; persisted with the next commit."""
        key = (consumer, current_tenant().tenant_id)
        if position > self._pending_cursors.get(key, 0):
            self._pending_cursors[key] = position
            self._schedule_flush()
        if position > self._cursor_seen.get(key, 0):
            self._cursor_seen[key] = position

    def record_success(self, consumer: str, delivered: int) -> None:
        """A consumer delivered `delivered` events for the current tenant (shown by `edge sync status`)."""
        entry = self._status_entry(consumer)
        entry[0] = self._clock()
        entry[3] += delivered
        self._schedule_flush()

    def record_failure(self, consumer: str, reason: str) -> None:
        """A consumer's attempt failed; `reason` must not contain secrets (it is stored and shown)."""
        entry = self._status_entry(consumer)
        entry[1], entry[2] = self._clock(), reason[:500]
        self._schedule_flush()

    def _status_entry(self, consumer: str) -> list[Any]:
        key = (consumer, current_tenant().tenant_id)
        return self._pending_status.setdefault(key, [None, None, None, 0])

    def _take_pending(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], list[Any]]]:
        cursors, self._pending_cursors = self._pending_cursors, {}
        status, self._pending_status = self._pending_status, {}
        if self._flush_timer is not None:  # this commit carries them: the next move starts a new wait
            self._flush_timer.cancel()
            self._flush_timer = None
        return cursors, status

    def _restore_pending(
        self, cursors: dict[tuple[str, str], int], status: dict[tuple[str, str], list[Any]]
    ) -> None:
        self._schedule_flush()  # the commit that was to carry them failed
        for key, position in cursors.items():  # keep them for the next commit
            self._pending_cursors[key] = max(position, self._pending_cursors.get(key, 0))
        for key, (ok, failed, error, delivered) in status.items():
            entry = self._pending_status.setdefault(key, [None, None, None, 0])
            entry[0] = entry[0] or ok
            if entry[1] is None:
                entry[1], entry[2] = failed, error
            entry[3] += delivered

    async def _flush_cursors(self) -> None:
        if (not self._pending_cursors and not self._pending_status) or not self._connected:
            return
        async with self._lock:
            cursors, status = self._take_pending()
            try:
                await self._write_batch(CommitBatch([], {}, {}, cursors, status))
            except Exception as exc:  # the database refused (disk full, server gone): keep them for later
                self._restore_pending(cursors, status)
                log.warning("saving consumer cursors failed (%s); will retry", exc)

    async def cursor(self, consumer: str) -> int:
        clause, tenant = tenant_filter()
        pending = self._pending_cursors.get((consumer, tenant))
        rows = await self._read(
            f"SELECT position FROM cursors WHERE consumer = ? AND {clause}", (consumer, tenant)
        )
        stored = int(rows[0][0]) if rows else 0
        position = max(stored, pending or 0)
        if position > self._cursor_seen.get((consumer, tenant), 0):
            self._cursor_seen[(consumer, tenant)] = position
        return position

    async def consumer_status(self, consumer: str) -> ConsumerStatus:
        clause, tenant = tenant_filter()
        rows = await self._read(
            "SELECT last_success, last_failure, last_error, delivered FROM consumer_status"
            f" WHERE consumer = ? AND {clause}",
            (consumer, tenant),
        )
        ok, failed, error, delivered = rows[0] if rows else (None, None, None, 0)
        pending = self._pending_status.get((consumer, tenant))
        if pending is not None:
            ok = pending[0] or ok
            failed, error = (pending[1], pending[2]) if pending[1] is not None else (failed, error)
            delivered += pending[3]
        return ConsumerStatus(consumer, tenant, await self.cursor(consumer), ok, failed, error, delivered)

    async def stored_cursors(self, prefix: str) -> list[tuple[str, str]]:
        """Kernel-internal: (consumer, tenant) of every stored cursor whose consumer starts with `prefix`, so a
        module that is not running yet (an isolated one) still holds the rows it has not passed."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self._read(
            "SELECT consumer, tenant FROM cursors WHERE consumer LIKE ? ESCAPE '\\'", (pattern,)
        )
        return [(str(c), str(t)) for c, t in rows]

    async def last_sequences(self) -> dict[tuple[str, str], int]:
        """Kernel-internal: the last committed sequence of every device, to continue numbering after a restart."""
        rows = await self._read("SELECT tenant, device, last FROM device_sequences", ())
        return {(str(t), str(d)): int(s) for t, d, s in rows}

    # ---- tenant-scoped reads ---------------------------------------------------------------------------

    async def read_after(
        self, position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[StoredEvent]:
        clause, tenant = tenant_filter()
        query = f"SELECT {EVENT_COLUMNS} FROM outbox WHERE {clause} AND position > ?"
        params: list[object] = [tenant, position]
        if types:
            query += f" AND type IN ({','.join('?' * len(types))})"
            params += list(types)
        query += " ORDER BY position LIMIT ?"
        params.append(limit)
        rows = await self._read(query, params)
        return [StoredEvent(*row) for row in rows]

    async def read_device(
        self,
        device: str,
        types: Sequence[str],
        *,
        after: int = 0,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[StoredEvent]:
        """One device's events of these types (sample time in [since, until)), by position after `after`.

        History reaches back as far as retention keeps rows (`[storage.retention]`)."""
        clause, tenant = tenant_filter()
        query = f"SELECT {EVENT_COLUMNS} FROM outbox WHERE {clause} AND device = ? AND position > ?"
        params: list[object] = [tenant, device, after]
        query += f" AND type IN ({','.join('?' * len(types))})"
        params += list(types)
        if since is not None:
            query += " AND time >= ?"
            params.append(since)
        if until is not None:
            query += " AND time < ?"
            params.append(until)
        query += f" ORDER BY position {'DESC' if newest_first else 'ASC'} LIMIT ?"
        params.append(limit)
        return [StoredEvent(*row) for row in await self._read(query, params)]

    async def backlog(self, consumer: str) -> int:
        clause, tenant = tenant_filter()
        # every row of the tenant is at or before the newest one this process committed (no other process
        # appends here): a consumer past it has nothing left, which the status asks about every second
        last = self._tenant_last.get(tenant) if self._sole_writer else None
        if last is not None and self._cursor_seen.get((consumer, tenant), 0) >= last:
            return 0
        position = await self.cursor(consumer)
        rows = await self._read(
            f"SELECT COUNT(*) FROM outbox WHERE {clause} AND position > ?", (tenant, position)
        )
        return int(rows[0][0])

    async def count(self) -> int:
        clause, tenant = tenant_filter()
        rows = await self._read(f"SELECT COUNT(*) FROM outbox WHERE {clause}", (tenant,))
        return int(rows[0][0])

    # ---- dead letters (tenant-scoped) ------------------------------------------------------------------

    async def dead_letter(self, consumer: str, rejected: Sequence[tuple[StoredEvent, str]]) -> None:
        """Durably keep events `consumer` refused, with the reason (idempotent per consumer and position)."""
        _, tenant = tenant_filter()
        if any(row.tenant != tenant for row, _ in rejected):
            raise NoTenantContext(f"dead letters of another tenant written in the context of {tenant!r}")
        now = self._clock()
        params = [
            (
                consumer,
                tenant,
                r.position,
                r.id,
                r.type,
                r.subject,
                r.device,
                r.sequence,
                r.time,
                why,
                now,
                r.body,
            )
            for r, why in rejected
        ]
        await self._write_many(self._sql.upsert_dead_letter, params)

    async def dead_letters(
        self, consumer: str | None = None, limit: int = 100, replay_only: bool = False
    ) -> list[DeadLetter]:
        clause, tenant = tenant_filter()
        query = f"SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE {clause}"
        params: list[object] = [tenant]
        if consumer is not None:
            query += " AND consumer = ?"
            params.append(consumer)
        if replay_only:
            query += " AND replay = 1"
        query += " ORDER BY position LIMIT ?"
        params.append(limit)
        return [_dead_letter(row) for row in await self._read(query, params)]

    async def resolve_dead_letters(self, consumer: str, positions: Sequence[int]) -> None:
        """The consumer accepted these replayed dead letters: they are removed."""
        clause, tenant = tenant_filter()
        await self._write_many(
            f"DELETE FROM dead_letters WHERE consumer = ? AND {clause} AND position = ?",
            [(consumer, tenant, p) for p in positions],
        )

    async def request_replay(self, consumer: str | None = None) -> int:
        """Offer the tenant's dead letters (of one consumer, or all) to their consumer again."""
        clause, tenant = tenant_filter()
        query = f"UPDATE dead_letters SET replay = 1 WHERE {clause}"
        params: list[object] = [tenant]
        if consumer is not None:
            query += " AND consumer = ?"
            params.append(consumer)
        async with self._lock:
            return await self._write_statements(query, [params])

    # ---- retention primitives (kernel, tenant-scoped; used by edge.outbox.retention) ---------------

    def hold(self, consumer: str, tenants: Iterable[str]) -> None:
        """Rows of these tenants stay until `consumer` passed them (or the tenant's limits drop them)."""
        for tenant in tenants:
            self._holders.setdefault(tenant, set()).add(consumer)

    def release(self, consumer: str, tenants: Iterable[str]) -> None:
        """Rows of these tenants no longer wait for `consumer` (a module that lost the entitlement, a removed webhook)."""
        for tenant in tenants:
            self._holders.get(tenant, set()).discard(consumer)

    def holders(self) -> frozenset[str]:
        return frozenset(self._holders.get(tenant_filter()[1], ()))

    def policy(self) -> RetentionPolicy:
        return self._policies.get(tenant_filter()[1]) or RetentionPolicy()

    def usage(self) -> tuple[int, int]:
        """(events, bytes) the current tenant has committed in the outbox."""
        events, size = self._usage.get(tenant_filter()[1], (0, 0))
        return events, size

    def take_refused(self) -> Dropped:
        """Events refused under `refuse_newest` since the last call (the sweep counts and reports them)."""
        return self._refused.pop(tenant_filter()[1], Dropped())

    async def delivered_floor(self) -> int:
        """Every holder of the current tenant's rows has passed this position."""
        holders = self.holders()
        if not holders:
            return self.last_position
        return min([await self.cursor(consumer) for consumer in sorted(holders)])

    async def first_position_since(self, enqueued: float) -> int | None:
        """The first row of the tenant stored at or after `enqueued`, or None.

        Rows are stored in time order (the outbox clock never goes back), so this is a binary search of
        point lookups: a few milliseconds however long the backlog, instead of a scan of every old row."""
        clause, tenant = tenant_filter()
        query = f"SELECT position, enqueued FROM outbox WHERE {clause} AND position >= ? ORDER BY position LIMIT 1"
        return await self._search_first_since(query, tenant, enqueued)

    async def _search_first_since(self, query: str, tenant: str, enqueued: float) -> int | None:
        """`first_since_search` with one read per probe; a backend that can run the search whole where its
        rows are (SQLite, on its reader thread) does it in one step: retention asks every few seconds."""
        search = first_since_search(enqueued, self.last_position)
        try:
            position = next(search)
            while True:
                rows = await self._read(query, (tenant, position))
                position = search.send((int(rows[0][0]), float(rows[0][1])) if rows else None)
        except StopIteration as done:
            return cast(int | None, done.value)

    async def position_freeing(self, nbytes: int) -> int | None:
        """The smallest position such that deleting the tenant's rows up to it frees at least `nbytes`."""
        clause, tenant = tenant_filter()
        freed, after, last = 0, 0, None
        while True:
            rows = await self._read(
                f"SELECT position, length(body) FROM outbox WHERE {clause} AND position > ?"
                " ORDER BY position LIMIT 5000",
                (tenant, after),
            )
            for position, size in rows:
                freed += int(size)
                last = int(position)
                if freed >= nbytes:
                    return last
            if len(rows) < 5000:
                return last
            after = int(rows[-1][0])

    async def delete_through(self, position: int, delivered_through: int, reason: str | None) -> Dropped:
        """Delete the tenant's rows up to `position`. Those after `delivered_through` (not every holder had
        them) are counted as dropped under `reason` in the same transaction, and returned."""
        _, tenant = tenant_filter()
        total = Dropped()
        while True:
            async with self._lock:
                end, events, size, lost = await self._delete_chunk(
                    tenant, position, delivered_through, reason
                )
            counts = self._usage.setdefault(tenant, [0, 0])
            counts[0] -= events
            counts[1] -= size
            total = total + lost
            if end >= position or not events:
                return total

    async def record_drops(self, reason: str, dropped: Dropped) -> None:
        """Count events that were refused (never stored) for the current tenant."""
        _, tenant = tenant_filter()
        await self._write_many(
            self._sql.add_drops, [(tenant, reason, dropped.events, dropped.bytes, self._clock())]
        )

    async def drop_totals(self) -> dict[str, tuple[int, int]]:
        """reason -> (events, bytes) dropped or refused for the current tenant since the outbox was created."""
        clause, tenant = tenant_filter()
        rows = await self._read(f"SELECT reason, events, bytes FROM drop_counts WHERE {clause}", (tenant,))
        return {str(r): (int(e), int(b)) for r, e, b in rows}

    # ---- plumbing ----------------------------------------------------------------------------------------

    async def _write_many(self, query: str, params: Sequence[Sequence[object]]) -> None:
        """One short transaction on the writer connection."""
        async with self._lock:
            await self._write_statements(query, params)


def _prepare(
    batch: Sequence[tuple[Event, asyncio.Future[int] | None]], now: float
) -> tuple[list[Row], dict[tuple[str, str], int], dict[str, list[int]]]:
    """A batch's rows, each device's last sequence in it, and each tenant's [events, bytes]."""
    rows: list[Row] = []
    sequences: dict[tuple[str, str], int] = {}
    usage: dict[str, list[int]] = {}
    for e, _ in batch:
        rows.append((e.id, e.tenant, e.type, e.subject, e.device, e.sequence, e.time, now, e.body))
        if e.device is not None and e.sequence is not None:
            sequences[(e.tenant, e.device)] = e.sequence
        counts = usage.get(e.tenant)
        if counts is None:
            usage[e.tenant] = [1, len(e.body)]
        else:
            counts[0] += 1
            counts[1] += len(e.body)
    return rows, sequences, usage


def _dead_letter(row: tuple[Any, ...]) -> DeadLetter:
    consumer, *event, reason, dead_at, attempts, replay = row
    return DeadLetter(
        str(consumer), StoredEvent(*event), str(reason), float(dead_at), int(attempts), bool(replay)
    )
