"""The kernel's device poller: one task per device, owning its schedule, connection state and sequence.

Each poll reads the driver's compiled plan, normalizes the raw values and appends one telemetry event (the
whole poll, every point with its quality) to the outbox. A device that stops answering still yields an event
per poll interval, every point quality `bad` with the reason, while reconnect attempts follow a capped
exponential backoff with jitter. Down and recovered are each logged once and emitted as status events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from edge.backoff import Backoff
from edge.drivers import DeviceSession, DeviceSpec, Driver, RawValue
from edge.errors import DeviceError, DeviceUnreachable, WriteRejected
from edge.events import DEVICE_STATUS, TELEMETRY, Event, make_event
from edge.normalize import DeviceNormalizer
from edge.points import PointFault, Scalar
from edge.stats import DeviceStats
from edge.tenancy import TenantContext, tenant_scope

log = logging.getLogger(__name__)

StatusListener = Callable[[DeviceSpec, bool, str | None], None]


class EventSink(Protocol):
    async def append(self, event: Event) -> None: ...


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
    ) -> None:
        self.spec = spec
        self.tenant = tenant
        self._driver = driver
        self._sink = sink
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
        self._stopping = False

    def request_stop(self) -> None:
        """Stop after the current poll. Cancellation alone is not enough: a driver library may swallow it."""
        self._stopping = True

    # ---- the poll loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        with tenant_scope(self.tenant):
            loop = asyncio.get_running_loop()
            interval = self.spec.poll_interval
            due = loop.time()
            try:
                while not self._stopping:
                    await self.poll_once()
                    due += interval
                    now = loop.time()
                    if due < now:  # the poll took longer than its interval: skip the missed ticks
                        missed = int((now - due) // interval) + 1
                        self.stats.overruns += missed
                        due += missed * interval
                    await asyncio.sleep(due - now)
            finally:
                await self._close()

    async def poll_once(self) -> None:
        async with self._lock:
            raw, error = await self._read()
        sample_time = time.time()
        points = self._normalizer.normalize(raw)
        status_change = self._account(points, error)
        if status_change is not None:
            await self._sink.append(self.status_event(*status_change))
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

    def status_event(self, up: bool, reason: str | None) -> Event:
        return make_event(
            type=DEVICE_STATUS,
            source=self._source,
            subject=self._subject,
            tenant=self.tenant.tenant_id,
            time=time.time(),
            data={
                "device": self.spec.name,
                "site": self.spec.site,
                "status": "up" if up else "down",
                "reason": reason,
            },
        )

    async def _close(self) -> None:
        self._connected = False
        try:
            await self._session.close()
        except DeviceError as exc:
            log.debug("closing %s: %s", self.spec.name, exc)

    # ---- commands --------------------------------------------------------------------------------------

    async def write(self, point_name: str, value: Scalar) -> Scalar:
        """Write an engineering value to a point; returns the raw value sent. Raises WriteRejected."""
        point = next((p for p in self.spec.points if p.name == point_name), None)
        if point is None:
            raise WriteRejected(self.spec.name, "no such point", point=point_name)
        if not point.writable:
            raise WriteRejected(self.spec.name, "point is not writable", point=point_name)
        raw = self._normalizer.to_raw(point_name, value)
        async with self._lock:
            if not self._connected:
                await self._connect()
            try:
                await self._session.write(point, raw)
            except ValueError as exc:
                raise WriteRejected(self.spec.name, str(exc), point=point_name) from None
        return raw

    async def read_once(self) -> dict[str, dict[str, Any]]:
        """Connect, read every point once, close: for `edge device test`."""
        with tenant_scope(self.tenant):
            raw, _ = await self._read()
            await self._close()
            return self._normalizer.normalize(raw)
