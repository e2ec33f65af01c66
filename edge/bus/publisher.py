"""From the outbox to the local bus (MQTT or NATS JetStream: `edge.bus.base.Bus`).

`OutboxPublisher` is a durable outbox consumer: per tenant it reads committed events after its cursor, publishes
them (QoS 1 by default), and moves the cursor only once the broker (or JetStream) acknowledged the whole batch. A lost
connection simply means reading again from the cursor, so a broker restart loses nothing that was stored.

`LastValuePublisher` keeps each point's latest value on its own retained topic. It is state, not history: it
coalesces updates per point, publishes a point at most every `min_interval` seconds and only when its value or
quality changed (or `refresh` seconds passed), and republishes everything after a reconnect, because a broker
without persistence forgets retained messages when it restarts. A device's changed points go out as one
`Bus.publish_batch` (on MQTT at QoS 0: one buffer of PUBLISH packets, one write). With `per_device` (`bus.point_topic_mode =
"device"`) it keeps one retained message per device instead, holding every point's latest sample: one publish
per device and interval rather than one per point, which is what bounds a busy gateway's CPU otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import orjson

from edge.bus.access import SESSIONS_AWAY
from edge.bus.base import Bus, BusDisconnected, MessageProperties
from edge.bus.topics import Topics
from edge.ops.slices import LoopSlice
from edge.ops.stats import GatewayStats
from edge.outbox import OutboxStore
from edge.outbox.consumer import DurableConsumer
from edge.sdk.drivers import DeviceSpec
from edge.sdk.events import TELEMETRY, Event, rfc3339
from edge.sdk.grid import sleep_until_next_tick
from edge.sdk.ratelimit import FairScheduler
from edge.sdk.tenancy import TenantContext, tenant_scope

log = logging.getLogger(__name__)

MQTT_CONSUMER = "mqtt"
# retained updates sent before the flush yields to the loop (between devices): a flush of tens of thousands of
# per-point messages would otherwise hold events and polls back. The flush runs on the housekeeping tick, off the
# poll grid (edge.sdk.grid), so a second's worth at 1 s polls goes out in one pass and one write
_YIELD_EVERY = 2000
_RESEND_BATCH = 500  # retained messages per write when republishing after a reconnect

PUBLISH_SLOTS = 2  # tenants' batches in flight at once; more tenants take weighted-fair turns for them
PUBLISH_SLICE = 0.001  # seconds a batch's publishing holds the loop before it lets other ready work run

Pace = Callable[[str, int], Awaitable[None]]  # the tenant's MQTT limit (edge.ops.quotas.Quotas.publish)


class PointShare(Protocol):
    """The tenant's MQTT limit as retained point updates use it (edge.ops.quotas.Quotas): checked before a
    device's updates go out, charged with what went."""

    def point_updates_due(self, tenant: str) -> bool: ...
    def point_updates_sent(self, tenant: str, updates: int) -> None: ...


# CloudEvents MQTT binding, structured mode: on MQTT 5 the Content Type property says the payload is a whole
# CloudEvent in JSON.
CLOUDEVENT_PROPERTIES = MessageProperties(content_type="application/cloudevents+json")


class _Watchable(Protocol):
    def watch(self, topic: str, callback: Callable[[bytes], None]) -> None: ...


class SessionGate:
    """Holds the publisher after the embedded broker (re)started until the persistent sessions it restored
    from disk are back, for at most `grace` seconds.

    Mosquitto 2.0 restores a persistent session without its user's ACL (it finds it when the client connects)
    and queues nothing for it meanwhile: an event published before its client reconnects would never reach
    it. The broker counts the sessions whose client is away (`$SYS/broker/clients/disconnected`, retained,
    every second); the gate opens when that count is 0 or the grace is over. Events wait in the outbox."""

    def __init__(self, bus: _Watchable, grace: float) -> None:
        self._grace = grace
        self._open = asyncio.Event()
        self._open.set()
        self._away: int | None = None
        self._deadline = 0.0
        bus.watch(SESSIONS_AWAY, self._on_count)

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def broker_started(self) -> None:
        """The broker just (re)started: close until its restored sessions are back (or the grace is over)."""
        self._away = None
        self._deadline = time.monotonic() + self._grace
        self._open.clear()

    async def wait(self) -> None:
        while not self._open.is_set():
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "%s persistent MQTT session(s) restored by the broker still away after %g s: publishing;"
                    " they miss what is published before they reconnect",
                    "some" if self._away is None else self._away,
                    self._grace,
                )
                self._open.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._open.wait(), remaining)

    def _on_count(self, payload: bytes) -> None:
        try:
            self._away = int(payload)
        except ValueError:
            return
        if self._away == 0 and not self._open.is_set():
            self._open.set()


class OutboxPublisher:
    def __init__(
        self,
        outbox: OutboxStore,
        bus: Bus,
        topics: Topics,
        tenants: Iterable[TenantContext],
        stats: GatewayStats,
        *,
        qos: int = 1,
        batch: int = 500,
        gate: SessionGate | None = None,
        pace: Pace | None = None,
    ) -> None:
        self._outbox = outbox
        self._bus = bus
        self._topics = topics
        self._tenants = {t.tenant_id: t for t in tenants}
        self._stats = stats
        self._qos = qos
        self._batch = batch
        self._gate = gate
        self._pace = pace
        # Tenants share the bus's in-flight window: a tenant with a large backlog gets its turn and no more
        # (start-time fair queueing in events, as the cloud uplink), so a fresh batch of another goes next.
        self._turns = FairScheduler(PUBLISH_SLOTS, anticipation=0.0)
        for tenant in self._tenants:
            self._turns.add(tenant)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for ctx in self._tenants.values():
                group.create_task(self._run_tenant(ctx), name=f"publisher-{ctx.tenant_id}")

    async def _run_tenant(self, ctx: TenantContext) -> None:
        events = DurableConsumer(self._outbox, ctx, MQTT_CONSUMER, max_batch=self._batch)
        with tenant_scope(ctx):
            await self._bus.wait_connected()
            async with events:
                async for batch in events:
                    if self._gate is not None and not self._gate.is_open:
                        await self._gate.wait()
                    if self._pace is not None:
                        await self._pace(ctx.tenant_id, len(batch.events))
                    async with self._turns.turn(ctx.tenant_id, len(batch.events)):
                        published = await self._publish(batch.events)
                    if published:
                        events.ack(batch)
                        self._stats.events_published += len(batch.events)
                    else:  # not acknowledged: read again from the cursor once connected
                        await self._bus.wait_connected()

    async def _publish(self, rows: Sequence[Any]) -> bool:
        """Publish a batch; True once every message is acknowledged, False to replay it after a reconnect."""
        tenant = rows[0].tenant
        pending = []
        turns = LoopSlice(PUBLISH_SLICE)
        try:
            for row in rows:
                await turns.tick()  # a large batch never holds back another tenant's events for long
                topic = self._topics.events(tenant, row.subject)
                published = self._bus.publish(
                    topic, row.body, qos=self._qos, message_id=row.id, properties=CLOUDEVENT_PROPERTIES
                )
                pending.append(await published)
        except BusDisconnected:
            pass
        results = await asyncio.gather(*pending, return_exceptions=True)
        failed = len(pending) < len(rows) or any(isinstance(r, BaseException) for r in results)
        if failed:
            log.debug("publish of %d events interrupted; replaying from the outbox", len(rows))
        return not failed


class LastValuePublisher:
    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        stats: GatewayStats,
        *,
        qos: int = 1,
        min_interval: float = 1.0,
        refresh: float = 60.0,
        per_device: bool = False,
        share: PointShare | None = None,
    ) -> None:
        self._bus = bus
        self._per_device = per_device
        self._topics = topics
        self._stats = stats
        self._share = share
        self._qos = qos
        self._min_interval = min_interval
        self._refresh = max(refresh, min_interval)
        # Telemetry per device since the last flush: the newest full poll, then the pushed changes (COV,
        # subscriptions) after it, which carry only the points that changed. A full poll replaces the list, so a
        # fast poll costs one dict assignment per event here, whatever the number of points.
        self._latest: dict[tuple[str, str, str], list[Event]] = {}
        self._full: dict[tuple[str, str, str], int] = {}  # most points one event of the device carried
        self._resend: dict[str, bytes] = {}  # topic -> payload to send as it is (device status, republishing)
        # topic -> (when, value, quality, payload) of what was last sent; per device: (when, points, None, payload)
        self._published: dict[str, tuple[float, Any, Any, bytes]] = {}
        self._wake = asyncio.Event()
        self._sent_since_yield = 0
        bus.on_connect_hooks.append(self._republish_all)

    def on_commit(self, events: Sequence[Event], last_position: int) -> None:
        latest, full = self._latest, self._full
        for event in events:
            if event.type == TELEMETRY and event.data is not None:
                key = (event.tenant, event.data["site"], event.data["device"])
                count = len(event.data["points"])
                pending = latest.get(key)
                if pending is None or count >= full.get(key, 0):
                    latest[key] = [event]
                    full[key] = max(count, full.get(key, 0))
                else:  # a pushed change: the points it does not carry keep their pending samples
                    pending.append(event)
        self._wake.set()

    def on_status(self, spec: DeviceSpec, up: bool, reason: str | None) -> None:
        topic = self._topics.device_status(spec.tenant, spec.site, spec.name)
        self._resend[topic] = bytes(  # kept after it is sent: a block of its size (see _flush_device)
            memoryview(
                orjson.dumps(
                    {"status": "up" if up else "down", "reason": reason, "time": rfc3339(time.time())}
                )
            )
        )
        self._wake.set()

    def _republish_all(self) -> None:
        # Called after every (re)connect: a broker without persistence forgot its retained messages.
        for topic, (_, _, _, payload) in self._published.items():
            self._resend.setdefault(topic, payload)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            if self._min_interval > 0:
                # Coalesce: whatever arrives until the next tick of the interval is examined once, then. The
                # tick is the gateway's periodic work's, half a second off the poll grid (edge.sdk.grid): the
                # poll round's events go out before its retained updates, which cost no wakeup of their own.
                await sleep_until_next_tick(self._min_interval)
            self._wake.clear()
            await self._flush()

    async def drain(self) -> None:
        """At a clean stop, once the pollers stopped and `run` was cancelled: send what is pending at once, above
        all the devices' stop statuses, and wait until the broker took it. `run` may have been cancelled in its
        coalescing wait, after the statuses arrived (bound this with a timeout)."""
        sent: list[asyncio.Future[None]] = []
        for topic, payload in list(self._resend.items()):
            try:
                sent.append(await self._bus.publish(topic, payload, qos=self._qos, retain=True))
            except BusDisconnected:
                return
            del self._resend[topic]
        await self._flush()
        await asyncio.gather(*sent, return_exceptions=True)

    async def _flush(self) -> None:
        resend, self._resend = list(self._resend.items()), {}
        for start in range(0, len(resend), _RESEND_BATCH):
            chunk = resend[start : start + _RESEND_BATCH]
            if not await self._send(chunk):
                for topic, payload in resend[start:]:  # a newer payload that arrived meanwhile stays
                    self._resend.setdefault(topic, payload)
                return
            now = time.monotonic()
            for topic, payload in chunk:
                previous = self._published.get(topic)
                self._published[topic] = (now, *(previous[1:3] if previous else (None, None)), payload)
        latest, self._latest = self._latest, {}
        now = time.monotonic()
        for (tenant, site, device), events in latest.items():
            if self._sent_since_yield >= _YIELD_EVERY:
                self._sent_since_yield = 0
                await asyncio.sleep(0)  # let events and polls through between devices' updates
            key = (tenant, site, device)
            if self._share is not None and not self._share.point_updates_due(tenant):
                self._latest[key] = events + self._latest.get(key, [])  # over its MQTT rate: coalesced, later
                continue
            flush = self._flush_device_state if self._per_device else self._flush_device
            sent = self._stats.point_updates_published
            connected = await flush(tenant, site, device, events, now)
            if self._share is not None:
                self._share.point_updates_sent(tenant, self._stats.point_updates_published - sent)
            if not connected:
                self._latest[key] = events + self._latest.get(key, [])  # newer ones stay last
                return

    async def _flush_device(
        self, tenant: str, site: str, device: str, events: list[Event], now: float
    ) -> bool:
        """Publish what changed among one device's pending samples, newest first; False once disconnected."""
        point_topic, published, refresh = self._topics.point, self._published, self._refresh
        several = len(events) > 1
        done: set[str] = set()
        changed: list[tuple[str, Any, Any, bytes]] = []
        for event in reversed(events):
            assert event.data is not None
            when, sequence = rfc3339(event.time), event.sequence
            for name, sample in event.data["points"].items():
                if several:  # a point in several events: only its newest sample counts
                    if name in done:
                        continue
                    done.add(name)
                topic = point_topic(tenant, site, device, name)
                value, quality = sample["value"], sample["quality"]
                last = published.get(topic)
                if last is not None and last[1] == value and last[2] == quality and now - last[0] < refresh:
                    continue
                payload = orjson.dumps({**sample, "time": when, "sequence": sequence})
                changed.append((topic, value, quality, payload))
        if not changed:
            return True
        if not await self._send([(topic, payload) for topic, _, _, payload in changed]):
            return False
        for topic, value, quality, payload in changed:
            # kept until the next change or reconnect: copied into a block of its size (orjson's own output
            # sits in a 4 KB buffer; 2,400 point topics held 10 MB of them, see edge.sdk.events)
            published[topic] = (now, value, quality, bytes(memoryview(payload)))
        return True

    async def _flush_device_state(
        self, tenant: str, site: str, device: str, events: list[Event], now: float
    ) -> bool:
        """Publish the device's latest samples as one retained message if any changed; False once disconnected."""
        topic = self._topics.device_points(tenant, site, device)
        last = self._published.get(topic)
        points: dict[str, Any] = dict(last[1]) if last is not None else {}
        for event in events:  # oldest first: a newer sample of a point replaces an older one
            assert event.data is not None
            points.update(event.data["points"])
        if last is not None and last[1] == points and now - last[0] < self._refresh:
            return True
        newest = events[-1]
        payload = orjson.dumps(
            {
                "device": device,
                "site": site,
                "time": rfc3339(newest.time),
                "sequence": newest.sequence,
                "points": points,
            }
        )
        if not await self._send([(topic, payload)]):
            return False
        self._published[topic] = (now, points, None, bytes(memoryview(payload)))  # as in _flush_device
        return True

    async def _send(self, messages: list[tuple[str, bytes]]) -> bool:
        """Publish retained (topic, payload) messages in one batch (one write on MQTT at QoS 0)."""
        try:
            future = await self._bus.publish_batch(messages, qos=self._qos, retain=True)
        except BusDisconnected:
            return False  # the reconnect hook republishes everything
        future.add_done_callback(_ignore_outcome)
        self._stats.point_updates_published += len(messages)
        self._sent_since_yield += len(messages)
        return True


def _ignore_outcome(future: asyncio.Future[None]) -> None:
    # Retained state needs no replay: a reconnect republishes everything. Retrieve the outcome so asyncio
    # does not warn about it.
    if not future.cancelled():
        future.exception()
