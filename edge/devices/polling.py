"""The kernel's device poller: one task per device, owning its schedule, connection state and sequence.

Each poll reads the driver's compiled plan, normalizes the raw values and appends one telemetry event (the
whole poll, every point with its quality) to the outbox. A device that stops answering yields a status event
("down", with the reason) and one telemetry event with every point quality `bad`, then nothing until it
answers again (a status event "up" and a full poll), while reconnect attempts follow a capped exponential
backoff with jitter. Down and recovered are each logged once. A clean stop emits a status event "stopped".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeGuard, runtime_checkable

from pydantic import ValidationError

from edge.devices.normalize import DeviceNormalizer
from edge.ops.logs import device_scope
from edge.ops.stats import DeviceStats
from edge.outbox.store import FencedOut
from edge.sdk.backoff import Backoff
from edge.sdk.drivers import DeviceSession, DeviceSpec, Driver, RawValue, SupportsPush, SupportsValueRange
from edge.sdk.errors import (
    DeviceError,
    DeviceUnreachable,
    OutboxFull,
    SubscriptionUnsupported,
    WriteRejected,
)
from edge.sdk.events import DEVICE_STATUS, TELEMETRY, Event, make_event
from edge.sdk.grid import next_tick, sleep_until
from edge.sdk.points import PointConfig, PointFault, Scalar
from edge.sdk.tenancy import TenantContext, tenant_scope

log = logging.getLogger(__name__)

PUSH_COALESCE_WINDOW = 0.02  # seconds: pushed changes arriving together travel as one event

StatusListener = Callable[[DeviceSpec, bool, str | None], None]


def takes_push(session: DeviceSession, spec: DeviceSpec) -> TypeGuard[SupportsPush]:
    """Whether the device's changes are taken as pushed (COV, subscriptions) rather than polled: its mode is
    "auto" and the driver's session can push. A device that refuses at run time is then polled all the same."""
    return spec.mode != "poll" and isinstance(session, SupportsPush)


def reading_mode(spec: DeviceSpec, driver: Driver) -> str:
    """ "push" or "poll", as the poller would read the device (creating a session does no I/O)."""
    return "push" if takes_push(driver.session(spec), spec) else "poll"


class EventSink(Protocol):
    async def append(self, event: Event) -> None: ...


@runtime_checkable
class _DurableSink(Protocol):
    async def append_durable(self, event: Event) -> int: ...


@runtime_checkable
class _GatedSink(Protocol):
    """A sink that may refuse a device's events for a while (cluster mode: `edge.cluster.devices.FencedSink`)."""

    def accepts(self) -> bool: ...


class _PushFeed:
    """Receives a pushing driver's changes between two events (the `PushReceiver` the driver sees)."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.lost_reason: str | None = None
        self._changes: dict[int, RawValue] = {}
        self._time: float | None = None

    def reset(self) -> None:
        self.lost_reason, self._changes, self._time = None, {}, None
        self.changed.clear()

    def values(self, changes: Mapping[int, RawValue], sample_time: float | None = None) -> None:
        self._changes.update(changes)
        self._time = max(self._time or 0.0, sample_time or time.time())
        self.changed.set()

    def lost(self, reason: str) -> None:
        self.lost_reason = reason
        self.changed.set()

    def take(self) -> tuple[dict[int, RawValue], float]:
        changes, when = self._changes, self._time or time.time()
        self._changes, self._time = {}, None
        self.changed.clear()
        return changes, when


class DevicePoller:
    def __init__(
        self,
        spec: DeviceSpec,
        driver: Driver,
        tenant: TenantContext,
        sink: EventSink,
        *,
        gateway_id: str,
        last_sequence: int = 0,
        stats: DeviceStats | None = None,
        on_status: StatusListener | None = None,
        pace: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.spec = spec
        self.tenant = tenant
        self._driver = driver
        self._sink = sink
        self._accepting = sink.accepts if isinstance(sink, _GatedSink) else None
        self._plan: Any = driver.compile(spec)
        self._session: DeviceSession = driver.session(spec)
        self._normalizer = DeviceNormalizer(spec.name, self._plan.points)
        self._source = f"/{gateway_id}/{spec.driver}/{spec.name}"
        self._subject = f"{spec.site}/{spec.name}"
        self._sequence = last_sequence
        self._connected = False
        self._backoff = Backoff(0.5, 30.0)
        self._reconnect_at = 0.0
        self._lock = asyncio.Lock()  # one conversation with the device at a time: polls and writes
        self._read_guard = spec.timeout * (len(self._plan.points) + 2) + spec.poll_interval
        self.stats = stats or DeviceStats()
        self._on_status = on_status
        self._pace = pace  # the tenant's ingest limit (edge.ops.quotas): waits while the tenant is over it
        self._stopping = False

    @property
    def sequence(self) -> int:
        """The last sequence number this poller gave an event."""
        return self._sequence

    async def report_down(self, reason: str) -> None:
        """Say the device was down before this poller starts (cluster mode: nobody polled it for a while); the
        first good poll then reports it recovered."""
        self.stats.up = False
        self.stats.last_error = reason
        with tenant_scope(self.tenant):
            await self._sink.append(self.status_event(False, reason))

    def request_stop(self) -> None:
        """Stop after the current poll. Cancellation alone is not enough: a driver library may swallow it."""
        self._stopping = True

    # ---- the poll loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        with tenant_scope(self.tenant), device_scope(self.spec.name):  # bound into every log line
            try:
                if takes_push(self._session, self.spec):
                    await self._run_push(self._session)
                await self._run_polling()
            finally:
                await self._close()
                if self._stopping:  # asked to stop (`Gateway.stop`), not a crash the supervisor restarts
                    await self._stopped()

    async def _stopped(self) -> None:
        """Tell subscribers the device is no longer read (a clean stop): status "stopped", retained too.

        Runs while the task is being cancelled; the gateway stops its pollers before the outbox and the bus, and
        waits for the publisher to send what is committed: so the event is committed before this returns."""
        event = self.status_event(False, "gateway stopped", status="stopped")
        if isinstance(self._sink, _DurableSink):
            try:
                await self._sink.append_durable(event)
            except (
                OutboxFull,
                FencedOut,
            ) as exc:  # quota full or (cluster) lease lost: counted by the outbox
                log.warning("device %s: stop status not stored: %s", self.spec.name, exc)
        else:
            await self._sink.append(event)
        if self._on_status is not None:
            self._on_status(self.spec, False, "gateway stopped")

    async def _run_polling(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.spec.poll_interval
        # The first poll at once (a device just commissioned answers now), then on the multiples of the interval
        # of the loop's clock (edge.sdk.grid): every device of an interval polls in the same instant. Their polls
        # arrive in one burst, which the outbox commits and the publisher sends as one batch. Spreading them over
        # the interval (tried in 79a9adf) cost ~1.2 ms of CPU per poll in extra commits and wake-ups.
        due = loop.time()
        while not self._stopping:
            if self._pace is not None:
                await self._pace()  # over the tenant's ingest limit: this device is read later, not dropped
            await self.poll_once()
            following = next_tick(due, interval)
            now = loop.time()
            if following < now:  # the poll took longer than its interval: skip the missed ticks
                due = next_tick(now, interval)
                self.stats.overruns += round((due - following) / interval)
            else:
                due = following
            await sleep_until(due)

    async def poll_once(self) -> None:
        async with self._lock:
            started = time.perf_counter()
            raw, error = await self._read()
            self.stats.timed_poll(time.perf_counter() - started)
        sample_time = time.time()
        points = self._normalizer.normalize(raw)
        log.debug(
            "device %s polled: %d points%s", self.spec.name, len(points), f" ({error})" if error else ""
        )
        await self._emit(points, sample_time, error)

    async def _emit(self, points: dict[str, dict[str, Any]], sample_time: float, error: str | None) -> None:
        if self._accepting is not None and not self._accepting():
            # The sink would refuse this poll's events (cluster: the lease lapsed for a moment). Numbering them
            # anyway would leave a gap in the device's sequence that no status report explains; the poll is
            # dropped whole, as if not made, and the status it observed is judged again by the next one.
            return
        status_change = self._account(points, error)
        if status_change is not None:
            await self._sink.append(self.status_event(*status_change, at=sample_time))
        elif error is not None:
            # still down: the status event and one all-bad poll said so; repeating it every poll only fills
            # the outbox and the bus (75 identical events in 2.5 minutes at a 2 s poll)
            return
        points = self._normalizer.report(points)  # report by exception, where points ask for it
        if not points:  # nothing moved: nothing to store or publish
            return
        self._sequence += 1
        event = make_event(
            type=TELEMETRY,
            source=self._source,
            subject=self._subject,
            tenant=self.tenant.tenant_id,
            time=sample_time,
            data={"device": self.spec.name, "site": self.spec.site, "points": points},
            device=self.spec.name,
            sequence=self._sequence,
        )
        await self._sink.append(event)

    async def _read(self) -> tuple[list[RawValue], str | None]:
        """Raw values in plan order; when the device is unreachable every point is a fault with the reason."""
        try:
            if not self._connected:
                await self._connect()
            async with asyncio.timeout(self._read_guard):
                values = list(await self._session.read(self._plan))
            return values, None
        except DeviceUnreachable as exc:
            reason = exc.reason
        except TimeoutError:
            reason = f"no answer within {self._read_guard:.1f}s"
        except DeviceError as exc:
            reason = exc.reason
        self._connected = False
        if self._reconnect_at <= asyncio.get_running_loop().time():
            self._schedule_reconnect()
        await self._session.close()
        fault = PointFault(reason)
        return [fault] * len(self._plan.points), reason

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._reconnect_at:
            raise DeviceUnreachable(self.spec.name, self.stats.last_error or "reconnecting")
        try:
            async with asyncio.timeout(self.spec.timeout * 2):
                await self._session.connect()
        except TimeoutError:
            self._schedule_reconnect()
            raise DeviceUnreachable(self.spec.name, "connect timed out") from None
        except DeviceUnreachable:
            self._schedule_reconnect()
            raise
        self._connected = True
        self._backoff.reset()

    # ---- pushed changes (COV, OPC UA subscriptions) -----------------------------------------------------

    async def _run_push(self, session: SupportsPush) -> None:
        """Subscribe and turn pushed changes into events until stopped; return to fall back to polling."""
        feed = _PushFeed()
        loop = asyncio.get_running_loop()
        window = min(PUSH_COALESCE_WINDOW, self.spec.poll_interval)
        while not self._stopping:
            try:
                async with self._lock:
                    if not self._connected:
                        await self._connect()
                    feed.reset()
                    await session.subscribe(self._plan, feed)
            except SubscriptionUnsupported as exc:
                log.info("device %s cannot push changes (%s); polling it", self.spec.name, exc.reason)
                return
            except DeviceError as exc:
                await self._push_down(exc.reason)
                await asyncio.sleep(max(0.0, self._reconnect_at - loop.time()))
                continue
            while not self._stopping and feed.lost_reason is None:
                await feed.changed.wait()
                await asyncio.sleep(window)  # coalesce a burst of changes into one event
                if self._pace is not None:
                    await self._pace()  # over the limit: changes keep coalescing meanwhile, none is lost
                changes, sample_time = feed.take()
                if changes:
                    await self._emit(self._normalizer.normalize_changes(changes), sample_time, None)
            if feed.lost_reason is not None:
                await self._push_down(feed.lost_reason)
                await asyncio.sleep(max(0.0, self._reconnect_at - loop.time()))

    async def _push_down(self, reason: str) -> None:
        self._connected = False
        await self._session.close()
        if self._reconnect_at <= asyncio.get_running_loop().time():
            self._schedule_reconnect()
        points = self._normalizer.normalize([PointFault(reason)] * len(self._plan.points))
        await self._emit(points, time.time(), reason)

    def _schedule_reconnect(self) -> None:
        self._reconnect_at = asyncio.get_running_loop().time() + self._backoff.next_delay()

    def _account(
        self, points: dict[str, dict[str, Any]], error: str | None
    ) -> tuple[bool, str | None] | None:
        """Update counters; returns (up, reason) when the device's status changed."""
        stats = self.stats
        stats.polls += 1
        if error is None:
            bad = sum(1 for sample in points.values() if sample["quality"] == "bad")
            stats.points_read += len(points) - bad
            stats.bad_points += bad
            if stats.up is not True:
                stats.last_error = None
                self._set_status(True, None)
                return True, None
            return None
        stats.failed_polls += 1
        stats.bad_points += len(points)
        stats.last_error = error
        if stats.up is not False:
            self._set_status(False, error)
            return False, error
        return None

    def _set_status(self, up: bool, reason: str | None) -> None:
        was = self.stats.up
        self.stats.up = up
        self.stats.since = time.monotonic()
        if up:
            log.info("device %s %s", self.spec.name, "recovered" if was is False else "up")
        else:
            log.warning("device %s down: %s", self.spec.name, reason)
        if self._on_status is not None:
            self._on_status(self.spec, up, reason)

    def status_event(
        self, up: bool, reason: str | None, *, status: str | None = None, at: float | None = None
    ) -> Event:
        """A status event numbered in the device's own sequence, with its telemetry: a subscriber of the
        device's events sees every number, so a missed status change shows as a gap like a missed poll.
        `at`: the poll that observed the change (its sample time), so times follow the sequence; else now."""
        self._sequence += 1
        return make_event(
            type=DEVICE_STATUS,
            source=self._source,
            subject=self._subject,
            tenant=self.tenant.tenant_id,
            time=time.time() if at is None else at,
            data={
                "device": self.spec.name,
                "site": self.spec.site,
                "status": status or ("up" if up else "down"),
                "reason": reason,
            },
            device=self.spec.name,
            sequence=self._sequence,
        )

    async def _close(self) -> None:
        self._connected = False
        try:
            await self._session.close()
        except DeviceError as exc:
            log.debug("closing %s: %s", self.spec.name, exc)

    # ---- commands --------------------------------------------------------------------------------------

    async def write(
        self, point_name: str, value: Scalar | None, *, priority: int | None = None
    ) -> str | None:
        """Write an engineering value to a point (None releases it); returns the driver's note, if any (the
        write took effect, but the device answered something the user should know).

        `priority` replaces the point's own write priority for this write, for points whose model has a
        `priority` field (BACnet). Raises WriteRejected or DeviceUnreachable."""
        point = next((p for p in self.spec.points if p.name == point_name), None)
        if point is None:
            raise WriteRejected(self.spec.name, "no such point", point=point_name)
        if not point.writable:
            raise WriteRejected(self.spec.name, "point is not writable", point=point_name)
        if priority is not None:
            point = _with_priority(self.spec, point, priority)
        raw = None if value is None else self._normalizer.to_raw(point_name, value)
        async with self._lock:
            if not self._connected:
                await self._connect()
            try:
                return await self._session.write(point, raw)
            except ValueError as exc:
                raise WriteRejected(self.spec.name, str(exc), point=point_name) from None

    def accepted_range(self, point_name: str) -> tuple[float, float] | None:
        """The engineering values a point can take: the driver's raw range (`SupportsValueRange`) through the
        point's scaling. None when the driver does not say, or the point's scale factor is not read yet."""
        point = next((p for p in self.spec.points if p.name == point_name), None)
        if point is None or not isinstance(self._driver, SupportsValueRange):
            return None
        raw = self._driver.raw_range(point)
        if raw is None:
            return None
        low, high = (self._normalizer.to_value(point_name, r) for r in raw)
        if low is None or high is None:
            return None
        return (min(low, high), max(low, high))

    async def read_once(self) -> dict[str, dict[str, Any]]:
        """Connect, read every point once, close: for `edge device test`."""
        with tenant_scope(self.tenant):
            raw, _ = await self._read()
            await self._close()
            return self._normalizer.normalize(raw)


def _with_priority(spec: DeviceSpec, point: PointConfig, priority: int) -> PointConfig:
    """The point with another write priority, validated by the driver's own point model."""
    if "priority" not in type(point).model_fields:
        raise WriteRejected(
            spec.name, f"a {spec.driver} point has no write priority (BACnet points do)", point=point.name
        )
    try:
        return type(point).model_validate({**point.model_dump(), "priority": priority})
    except ValidationError as exc:
        reason = "; ".join(str(e["msg"]) for e in exc.errors())
        raise WriteRejected(spec.name, f"priority {priority}: {reason}", point=point.name) from None
