"""From the outbox to the local MQTT bus.

`OutboxPublisher` is a durable outbox consumer: per tenant it reads committed events after its cursor, publishes
them (QoS 1 by default), and moves the cursor only once the broker acknowledged the whole batch. A lost
connection simply means reading again from the cursor, so a broker restart loses nothing that was stored.

`LastValuePublisher` keeps each point's latest value on its own retained topic. It is state, not history: it
coalesces updates per point, publishes a point at most every `min_interval` seconds and only when its value or
quality changed (or `refresh` seconds passed), and republishes everything after a reconnect, because a broker
without persistence forgets retained messages when it restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from edge.bus.mqtt import BusDisconnected, MqttBus
from edge.drivers import DeviceSpec
from edge.events import TELEMETRY, Event, rfc3339
from edge.stats import GatewayStats
from edge.storage.sqlite import SqliteOutbox
from edge.tenancy import TenantContext, tenant_scope
from edge.topics import Topics

log = logging.getLogger(__name__)

MQTT_CONSUMER = "mqtt"


class OutboxPublisher:
    def __init__(
        self,
        outbox: SqliteOutbox,
        bus: MqttBus,
        topics: Topics,
        tenants: Iterable[TenantContext],
        stats: GatewayStats,
        *,
        qos: int = 1,
        batch: int = 500,
    ) -> None:
        self._outbox = outbox
        self._bus = bus
        self._topics = topics
        self._tenants = {t.tenant_id: t for t in tenants}
        self._stats = stats
        self._qos = qos
        self._batch = batch
        self._wake = {tenant: asyncio.Event() for tenant in self._tenants}
        outbox.add_commit_listener(self._on_commit)

    def _on_commit(self, events: Sequence[Event], last_position: int) -> None:
        for tenant in {e.tenant for e in events}:
            wake = self._wake.get(tenant)
            if wake is not None:
                wake.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for ctx in self._tenants.values():
                group.create_task(self._run_tenant(ctx), name=f"publisher-{ctx.tenant_id}")

    async def _run_tenant(self, ctx: TenantContext) -> None:
        with tenant_scope(ctx):
            wake = self._wake[ctx.tenant_id]
            position = await self._outbox.cursor(MQTT_CONSUMER)
            while True:
                await self._bus.wait_connected()
                rows = await self._outbox.read_after(position, self._batch)
                if not rows:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), 1.0)
                    continue
                if await self._publish(rows):
                    position = rows[-1].position
                    self._outbox.set_cursor(MQTT_CONSUMER, position)
                    self._stats.events_published += len(rows)

    async def _publish(self, rows: Sequence[Any]) -> bool:
        """Publish a batch; True once every message is acknowledged, False to replay it after a reconnect."""
        tenant = rows[0].tenant
        pending = []
        try:
            for row in rows:
                topic = self._topics.events(tenant, row.subject)
                pending.append(await self._bus.publish(topic, row.body, qos=self._qos))
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
        bus: MqttBus,
        topics: Topics,
        stats: GatewayStats,
        *,
        qos: int = 1,
        min_interval: float = 1.0,
        refresh: float = 60.0,
    ) -> None:
        self._bus = bus
        self._topics = topics
        self._stats = stats
        self._qos = qos
        self._min_interval = min_interval
        self._refresh = max(refresh, min_interval)
        self._pending: dict[str, tuple[Any, Any, bytes]] = {}  # topic -> (value, quality, payload)
        self._published: dict[
            str, tuple[float, Any, Any, bytes]
        ] = {}  # topic -> (when, value, quality, payload)
        self._wake = asyncio.Event()
        bus.on_connect_hooks.append(self._republish_all)

    def on_commit(self, events: Sequence[Event], last_position: int) -> None:
        point_topic = self._topics.point
        dumps = orjson.dumps
        for event in events:
            if event.type != TELEMETRY or event.data is None:
                continue
            site, device, when = event.data["site"], event.data["device"], rfc3339(event.time)
            for name, sample in event.data["points"].items():
                payload = dumps({**sample, "time": when, "sequence": event.sequence})
                self._pending[point_topic(event.tenant, site, device, name)] = (
                    sample["value"],
                    sample["quality"],
                    payload,
                )
        self._wake.set()

    def on_status(self, spec: DeviceSpec, up: bool, reason: str | None) -> None:
        topic = self._topics.device_status(spec.tenant, spec.site, spec.name)
        payload = orjson.dumps(
            {"status": "up" if up else "down", "reason": reason, "time": rfc3339(time.time())}
        )
        self._pending[topic] = (up, reason, payload)
        self._wake.set()

    def _republish_all(self) -> None:
        for topic, (_, value, quality, payload) in self._published.items():
            self._pending.setdefault(topic, (value, quality, payload))
        self._published.clear()
        self._wake.set()

    async def run(self) -> None:
        while True:
            next_due = await self._drain()
            self._wake.clear()
            timeout = None if next_due is None else max(0.0, next_due - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _drain(self) -> float | None:
        """Publish what is due; returns when the earliest deferred update becomes due, if any."""
        now = time.monotonic()
        next_due: float | None = None
        for topic, (value, quality, payload) in list(self._pending.items()):
            last = self._published.get(topic)
            if last is not None:
                changed = last[1] != value or last[2] != quality
                if not changed and now - last[0] < self._refresh:
                    del self._pending[topic]
                    continue
                if now - last[0] < self._min_interval:
                    due = last[0] + self._min_interval
                    next_due = due if next_due is None else min(next_due, due)
                    continue
            del self._pending[topic]
            try:
                future = await self._bus.publish(topic, payload, qos=self._qos, retain=True)
            except BusDisconnected:
                self._pending.setdefault(topic, (value, quality, payload))
                return now + 1.0
            future.add_done_callback(_ignore_outcome)
            self._published[topic] = (now, value, quality, payload)
            self._stats.point_updates_published += 1
        return next_due


def _ignore_outcome(future: asyncio.Future[None]) -> None:
    # Retained state needs no replay: a reconnect republishes everything. Retrieve the outcome so asyncio
    # does not warn about it.
    if not future.cancelled():
        future.exception()
