"""Modules' subscriptions read from JetStream (`edge.module_host.feed.EventFeed` over `edge.bus.nats`).

Each subscription of a module is, per tenant, a durable pull consumer `module_<name>_<n>` on the tenant's
events stream (acknowledge-all: acking a batch's last message acknowledges the batch). What a module has not
acknowledged is delivered again after `ack_wait`, or, after a restart, a crash, a kill -9 of the gateway or a
dropped connection, from the consumer's acknowledged floor (`_unacknowledged_start`): at-least-once, as from
the outbox. The position a module sees on an
event is the stream sequence. Filtering by type happens here (subjects do not carry the type); the events
of other types are acknowledged with the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Self

import nats.errors
import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from edge.bus.base import BusDisconnected
from edge.bus.nats import NatsBus, jetstream_name
from edge.outbox.consumer import Batch
from edge.sdk.events import StoredEvent
from edge.sdk.tenancy import TenantContext

__all__ = ["JetStreamConsumer", "JetStreamFeed", "stored_event"]

log = logging.getLogger(__name__)

_FETCH_WAIT: Final = 1.0  # seconds a fetch waits for messages before asking again
_ACK_WAIT: Final = 60.0  # a batch a module has not acknowledged by then is delivered again
_RETRY: Final = 1.0  # seconds between attempts while JetStream is unreachable


def stored_event(msg: Msg) -> StoredEvent:
    """The CloudEvent of a stream message as a module receives it (position: the stream sequence)."""
    envelope: dict[str, Any] = orjson.loads(msg.data)
    data = envelope.get("data")
    device = data.get("device") if isinstance(data, dict) else None
    sequence = envelope.get("sequence")
    return StoredEvent(
        position=msg.metadata.sequence.stream,
        id=str(envelope["id"]),
        tenant=str(envelope.get("tenantid", "")),
        type=str(envelope["type"]),
        subject=str(envelope.get("subject", "")),
        device=device if isinstance(device, str) else None,
        sequence=int(sequence) if sequence is not None else None,
        time=datetime.fromisoformat(envelope["time"]).timestamp(),
        body=msg.data,
    )


class JetStreamFeed:
    def __init__(self, bus: NatsBus) -> None:
        self._bus = bus
        self._from_now: set[str] = set()  # durable names to (re)create delivering only new events

    def durable(self, consumer: str, tenant: str) -> str:
        return jetstream_name(consumer, tenant)

    def open(
        self, tenant: TenantContext, consumer: str, types: Sequence[str] | None, max_batch: int
    ) -> JetStreamConsumer:
        durable = self.durable(consumer, tenant.tenant_id)
        from_now = durable in self._from_now
        self._from_now.discard(durable)
        return JetStreamConsumer(self._bus, tenant.tenant_id, durable, types, max_batch, from_now=from_now)

    def hold(self, consumer: str, tenant: str) -> None:
        """Nothing to do: the stream keeps what a durable consumer has not acknowledged (within its limits)."""

    def release(self, consumer: str, tenant: str) -> None:
        """Nothing to do: the durable consumer stays, so the tenant resumes if entitled again."""

    async def start_from_now(self, consumer: str, tenant: TenantContext) -> None:
        durable = self.durable(consumer, tenant.tenant_id)
        self._from_now.add(durable)
        with contextlib.suppress(nats.js.errors.NotFoundError, BusDisconnected):
            js = self._bus.client.jetstream()
            await js.delete_consumer(self._bus.streams.events_stream(tenant.tenant_id), durable)


class JetStreamConsumer:
    """A `BatchSource` over one durable pull consumer of one tenant's events stream."""

    def __init__(
        self,
        bus: NatsBus,
        tenant: str,
        durable: str,
        types: Sequence[str] | None,
        max_batch: int,
        *,
        from_now: bool = False,
    ) -> None:
        self._bus = bus
        self._tenant = tenant
        self._durable = durable
        self._types = frozenset(types or ()) or None
        self._max_batch = max_batch
        self._from_now = from_now
        self._sub: Any = None  # nats-py's JetStreamContext.PullSubscription
        self._last: dict[int, Msg] = {}  # batch.through -> the message whose ack acknowledges the batch
        self._acking: asyncio.Task[None] | None = None
        self._position = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._acking is not None:
            await asyncio.wait({self._acking})  # an ack already handed over still goes out
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._sub.unsubscribe()  # the durable consumer stays on the server

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Batch:
        while True:
            await self._flush_ack()
            try:
                sub = await self._subscription()
                msgs: list[Msg] = await sub.fetch(self._max_batch, timeout=_FETCH_WAIT)
            except nats.errors.TimeoutError:
                continue
            except (nats.errors.Error, nats.js.errors.Error, BusDisconnected, OSError) as exc:
                log.debug("JetStream consumer %s: %s; retrying", self._durable, exc)
                self._sub = None
                await self._bus.wait_connected(_RETRY * 5)
                await asyncio.sleep(_RETRY)
                continue
            if not msgs:
                continue
            after, through = self._position, msgs[-1].metadata.sequence.stream
            events = [stored_event(m) for m in msgs]
            if self._types is not None:
                events = [e for e in events if e.type in self._types]
            batch = Batch(events, after, through)
            self._last[through] = msgs[-1]
            if events:
                return batch
            self.ack(batch)  # nothing of ours in it: passed

    async def _unacknowledged_start(self, js: Any, stream: str) -> int | None:
        """Where the durable consumer must start again when it holds messages delivered but never acknowledged
        (to a gateway killed mid-batch, or over a connection that dropped), else None.

        Acknowledge-all would otherwise lose them: JetStream keeps them pending until `ack_wait`, delivers the
        newer ones meanwhile, and the first ack of a newer batch acknowledges the pending ones with it, unread.
        So the consumer is made again from its acknowledged floor: what was pending comes first (at-least-once)."""
        try:
            info = await js.consumer_info(stream, self._durable)
        except nats.js.errors.NotFoundError:
            return None
        floor, delivered = info.ack_floor.stream_seq or 0, info.delivered.stream_seq or 0
        if delivered <= floor:
            return None
        await js.delete_consumer(stream, self._durable)
        log.info(
            "JetStream consumer %s: %d message(s) delivered but not acknowledged; reading again from %d",
            self._durable,
            delivered - floor,
            floor + 1,
        )
        return floor + 1

    def ack(self, batch: Batch) -> None:
        """Acknowledge the batch (and all before it); sent before the next fetch, awaited on exit."""
        msg = self._last.pop(batch.through, None)
        if msg is None:
            return
        self._last.clear()
        self._position = max(self._position, batch.through)
        self._acking = asyncio.create_task(msg.ack())

    async def _flush_ack(self) -> None:
        acking, self._acking = self._acking, None
        if acking is None:
            return
        await asyncio.wait({acking})
        if not acking.cancelled() and acking.exception() is not None:
            # not acknowledged: JetStream delivers the batch again after ack_wait (at-least-once)
            log.debug("JetStream ack of %s failed: %s", self._durable, acking.exception())

    async def _subscription(self) -> Any:
        if self._sub is None:
            if not await self._bus.wait_connected(_RETRY * 5):
                raise BusDisconnected("NATS bus not connected")
            streams = self._bus.streams
            js = self._bus.client.jetstream()
            stream = streams.events_stream(self._tenant)
            restart_at = await self._unacknowledged_start(js, stream)
            policy = DeliverPolicy.NEW if self._from_now else DeliverPolicy.ALL
            config = ConsumerConfig(
                durable_name=self._durable,
                ack_policy=AckPolicy.ALL,
                ack_wait=_ACK_WAIT,
                max_ack_pending=max(1000, self._max_batch * 4),
                deliver_policy=policy if restart_at is None else DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=restart_at,
                filter_subject=streams.events_subjects(self._tenant),
            )
            self._sub = await js.pull_subscribe(
                streams.events_subjects(self._tenant), durable=self._durable, stream=stream, config=config
            )
            self._from_now = False
        return self._sub
