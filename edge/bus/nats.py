"""The NATS JetStream backend of the local bus (`edge.bus.base.Bus`), on nats-py (the NATS maintainers' client).

Topics keep the MQTT scheme of `edge.bus.topics`; each is sent on the NATS subject nats-server's MQTT listener
maps it to (`nats_subject`), so an MQTT client of the same server (paho, a BMS) subscribes to the same events.

Per tenant, two JetStream streams in the gateway's account (`TenantStreams`):
- `{prefix}_{tenant}_events`: `{prefix}.{tenant}.events.>`, the tenant's CloudEvents, kept `max_age` /
  `max_bytes`; each message carries `Nats-Msg-Id` = the event id, so JetStream drops the duplicates a replay
  from the outbox sends within `duplicate_window`. Modules consume it through durable consumers
  (`edge.bus.nats_feed`).
- `{prefix}_{tenant}_state`: points and device status, one message per subject (JetStream's "latest value",
  the counterpart of MQTT's retained messages).
Everything else (command results, the gateway's online/offline) is plain NATS, without acknowledgement.

Publishing keeps the outbox contract: a stream message is sent with a reply subject and its future resolves
on JetStream's ack (stored), fails with `PublishRejected` on a JetStream error and with `BusDisconnected`
when the connection drops or no ack came within `ack_timeout`; at most `max_inflight` acks are awaited at
once. The acks are matched here rather than with nats-py's `publish_async`, whose futures never fail when
the connection is lost and so would stall the publisher's window forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from edge.bus.base import (
    BusDisconnected,
    BusStats,
    InboundMessage,
    MessageProperties,
    PublishRejected,
    all_of,
)
from edge.bus.topics import mqtt_topic, nats_subject
from edge.sdk.backoff import Backoff

__all__ = ["NatsBus", "StreamLimits", "TenantStreams"]

log = logging.getLogger(__name__)

_STATUS_HEADER: Final = "Status"
_NO_RESPONDERS: Final = "503"
_UNSAFE_NAME: Final = re.compile(r"[^A-Za-z0-9_-]")  # stream and consumer names: no '.', '*', '>', spaces


def jetstream_name(*parts: str) -> str:
    """A stream or durable consumer name built from names that may hold '.', ':' or '/'."""
    return "_".join(_UNSAFE_NAME.sub("-", part) for part in parts)


@dataclass(frozen=True, slots=True)
class StreamLimits:
    max_age: float  # seconds an event is kept
    max_bytes: int  # per tenant's events stream; the oldest go first
    replicas: int  # 1 on a single server, 3 on a NATS cluster
    duplicate_window: float  # seconds within which a replayed event id is dropped


class TenantStreams:
    """The names, subjects and configurations of each tenant's streams, in one place."""

    def __init__(self, prefix: str, tenants: Iterable[str], limits: StreamLimits) -> None:
        self.prefix = prefix
        self.tenants = frozenset(tenants)
        self.limits = limits

    def events_stream(self, tenant: str) -> str:
        return jetstream_name(self.prefix, tenant, "events")

    def state_stream(self, tenant: str) -> str:
        return jetstream_name(self.prefix, tenant, "state")

    def events_subjects(self, tenant: str) -> str:
        return nats_subject(f"{self.prefix}/{tenant}/events/#")

    def stream_for(self, topic: str) -> str | None:
        """The stream a topic is stored in, or None for a plain NATS message."""
        parts = topic.split("/", 3)
        if len(parts) < 4 or parts[0] != self.prefix or parts[1] not in self.tenants:
            return None
        if parts[2] == "events":
            return self.events_stream(parts[1])
        if parts[2] in ("points", "status"):
            return self.state_stream(parts[1])
        return None

    def configs(self) -> list[StreamConfig]:
        limits, out = self.limits, []
        for tenant in sorted(self.tenants):
            out.append(
                StreamConfig(
                    name=self.events_stream(tenant),
                    description=f"CloudEvents of tenant {tenant} (edge gateway)",
                    subjects=[self.events_subjects(tenant)],
                    max_age=limits.max_age,
                    max_bytes=limits.max_bytes,
                    discard=DiscardPolicy.OLD,
                    storage=StorageType.FILE,
                    num_replicas=limits.replicas,
                    duplicate_window=limits.duplicate_window,
                )
            )
            out.append(
                StreamConfig(
                    name=self.state_stream(tenant),
                    description=f"latest point values and device status of tenant {tenant}",
                    subjects=[
                        nats_subject(f"{self.prefix}/{tenant}/points/#"),
                        nats_subject(f"{self.prefix}/{tenant}/status/#"),
                    ],
                    max_msgs_per_subject=1,
                    storage=StorageType.FILE,
                    num_replicas=limits.replicas,
                )
            )
        return out


class _Closed:
    """End-of-stream marker in the inbound queue."""


_CLOSED: Final = _Closed()


class NatsBus:
    """One NATS connection (nats-py reconnects it) with the tenants' JetStream streams kept in place."""

    def __init__(
        self,
        servers: list[str],
        client_name: str,
        streams: TenantStreams,
        *,
        username: str | None = None,
        password: str | None = None,
        max_inflight: int = 1000,
        ack_timeout: float = 10.0,
        reconnect_min: float = 0.5,
        reconnect_max: float = 5.0,
        status: tuple[str, bytes, bytes] | None = None,
        inbound_queue: int = 10_000,
        max_inbound_payload: int = 256 * 1024,
        max_outbound_payload: int = 256 * 1024,
    ) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self._servers = servers
        self._name = client_name
        self.streams = streams
        self._login = (username, password)
        self._max_inflight = max_inflight
        self._ack_timeout = ack_timeout
        self._backoff = Backoff(reconnect_min, reconnect_max)
        self._reconnect_wait = reconnect_max
        self._status = status  # (topic, online, offline): NATS has no last will, so only a clean stop says so
        self._inbound_limit = inbound_queue
        self._max_inbound_payload = max_inbound_payload
        self._max_outbound_payload = max_outbound_payload

        self.stats = BusStats()
        self.on_connect_hooks: list[Callable[[], None]] = []
        self._nc: NatsClient | None = None
        self._subscriptions: dict[str, int] = {}  # MQTT filter -> qos
        self._subscribed: set[str] = set()
        self._pending: dict[str, tuple[asyncio.Future[None], str, asyncio.TimerHandle]] = {}
        self._tokens = itertools.count()
        self._inbox = ""
        self._slot = asyncio.Event()  # set when a slot may have freed or the connection changed
        self._inbound: asyncio.Queue[InboundMessage | _Closed] = asyncio.Queue()
        self._up = asyncio.Event()
        self._connected = False
        self._stopping = False
        self._generation = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._readying: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------------------------------- public

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def connection_generation(self) -> int:
        return self._generation

    @property
    def inflight(self) -> int:
        return len(self._pending)

    @property
    def inflight_limit(self) -> int:
        return self._max_inflight

    @property
    def client(self) -> NatsClient:
        """The live nats-py connection (for the JetStream module feed); raises while not connected."""
        if self._nc is None or not self._connected:
            raise BusDisconnected("NATS bus not connected")
        return self._nc

    async def start(self) -> None:
        if self._supervisor is not None:
            raise RuntimeError("NatsBus.start() called twice")
        self._supervisor = asyncio.create_task(self._connect_loop(), name=f"nats-bus:{self._name}")

    async def stop(self) -> None:
        """Say 'offline', close the connection (nats-py flushes what it buffered) and end `messages()`."""
        if self._stopping:
            return
        self._stopping = True
        for task in (self._supervisor, self._readying):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task})
        nc = self._nc
        if nc is not None and nc.is_connected and self._status is not None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await nc.publish(nats_subject(self._status[0]), self._status[2])
        self._lost(BusDisconnected("NATS bus stopped"))
        if nc is not None:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await nc.close()
        self._up.set()  # wakes wait_connected(), which then reports False
        self._inbound.put_nowait(_CLOSED)

    async def wait_connected(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        if self._connected or self._stopping:
            return self._connected
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            return False
        return self._connected

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        *,
        message_id: str | None = None,
        properties: MessageProperties | None = None,
    ) -> asyncio.Future[None]:
        """As `Bus.publish`; `properties` (MQTT 5's) are left out: a CloudEvent says its own type."""
        if qos not in (0, 1, 2):
            raise ValueError(f"invalid QoS {qos}")
        if not topic or "+" in topic or "#" in topic:
            raise ValueError(f"invalid publish topic {topic!r}")
        if len(payload) > self._max_outbound_payload:
            self.stats.rejected += 1
            raise PublishRejected(
                topic, f"payload of {len(payload)} bytes exceeds the {self._max_outbound_payload}-byte limit"
            )
        while not self._connected or len(self._pending) >= self._max_inflight:
            if self._stopping:
                raise BusDisconnected("NATS bus stopped")
            self._slot.clear()
            await self._slot.wait()
        nc = self._nc
        assert nc is not None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        subject = nats_subject(topic)
        self.stats.published += 1
        if self.streams.stream_for(topic) is None:  # plain NATS: written is all there is
            await nc.publish(subject, payload)
            self.stats.acked += 1
            future.set_result(None)
            return future
        token = str(next(self._tokens))
        timer = asyncio.get_running_loop().call_later(self._ack_timeout, self._expire, token)
        self._pending[token] = (future, topic, timer)
        headers = {"Nats-Msg-Id": message_id} if message_id else None
        try:
            await nc.publish(subject, payload, reply=f"{self._inbox}.{token}", headers=headers)
        except (nats.errors.Error, OSError) as exc:
            self._settle(token, BusDisconnected(f"NATS publish failed: {exc}"))
        return future

    async def publish_batch(
        self, messages: Sequence[tuple[str, bytes]], qos: int = 0, retain: bool = False
    ) -> asyncio.Future[None]:
        """As `Bus.publish_batch`: each message is its own stream message, acknowledged on its own."""
        return all_of([await self.publish(topic, payload, qos, retain) for topic, payload in messages])

    def subscribe(self, topic_filter: str, qos: int = 1, *, retain_as_published: bool = False) -> None:
        """Remember a subscription (an MQTT filter); made at once when connected, and on every connect.
        (NATS retains nothing: `retain_as_published` changes nothing.)"""
        self._subscriptions[topic_filter] = qos
        if self._connected and self._readying is None:
            self._readying = asyncio.create_task(self._make_ready())

    async def messages(self) -> AsyncIterator[InboundMessage]:
        while True:
            item = await self._inbound.get()
            if isinstance(item, _Closed):
                self._inbound.put_nowait(item)
                return
            yield item

    # ------------------------------------------------------------------------------------ connection

    async def _connect_loop(self) -> None:
        """The first connection, retried with backoff; after it nats-py reconnects on its own, forever."""
        username, password = self._login
        while not self._stopping:
            try:
                nc = await nats.connect(
                    self._servers,
                    name=self._name,
                    user=username,
                    password=password,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=self._reconnect_wait,  # type: ignore[arg-type]  # seconds; float works
                    connect_timeout=5,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    error_cb=self._on_error,
                )
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                delay = self._backoff.next_delay()
                log.warning(
                    "NATS %s unavailable: %s; retrying in %.1f s", ",".join(self._servers), exc, delay
                )
                await asyncio.sleep(delay)
                continue
            self._nc = nc
            self._inbox = nc.new_inbox()  # + one token per publish
            await nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)
            await self._make_ready()
            return

    async def _make_ready(self) -> None:
        """After each (re)connect: streams in place, subscriptions made, then publishers may go."""
        nc = self._nc
        assert nc is not None
        try:
            while not self._stopping:
                try:
                    await self._ensure_streams(nc)
                    for topic_filter in self._subscriptions.keys() - self._subscribed:
                        await nc.subscribe(nats_subject(topic_filter), cb=self._on_message)
                        self._subscribed.add(topic_filter)
                    break
                except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError) as exc:
                    delay = self._backoff.next_delay()
                    log.error("NATS JetStream not usable (%s); retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
            if self._stopping or not nc.is_connected:
                return
            self._backoff.reset()
            if not self._connected:
                self._connected = True
                self._generation += 1
                self.stats.connects += 1
                self._up.set()
                self._slot.set()
                log.info("NATS connected to %s", nc.connected_url.netloc if nc.connected_url else "?")
                if self._status is not None:
                    await nc.publish(nats_subject(self._status[0]), self._status[1])
                for hook in list(self.on_connect_hooks):
                    try:
                        hook()
                    except Exception:  # a faulty hook must not take the bus down; it is named in the log
                        log.exception("bus on_connect hook %r failed", hook)
        finally:
            self._readying = None

    async def _ensure_streams(self, nc: NatsClient) -> None:
        """Create each tenant's streams, or bring an existing one to this configuration (limits changed)."""
        js = nc.jetstream(timeout=5)
        for config in self.streams.configs():
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError:  # exists with another configuration
                await js.update_stream(config)

    async def _on_disconnected(self) -> None:
        if self._connected:
            self.stats.disconnects += 1
            log.warning("NATS connection lost; nats-py reconnects")
        self._lost(BusDisconnected("NATS connection lost"))

    async def _on_reconnected(self) -> None:
        # a server that restarted without its store has lost the streams: make them again before publishing
        if self._readying is None and not self._stopping:
            self._readying = asyncio.create_task(self._make_ready())

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS: %s", exc)

    def _lost(self, reason: BusDisconnected) -> None:
        self._connected = False
        self._up.clear()
        pending, self._pending = self._pending, {}
        for future, _topic, timer in pending.values():
            timer.cancel()
            if not future.done():
                future.set_exception(reason)
                future.exception()  # retrieved: a caller that dropped the future gets no GC warning
        self._slot.set()

    # ------------------------------------------------------------------------------------------ acks

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject.rsplit(".", 1)[-1]
        if token not in self._pending:
            return  # expired or from before a reconnect: the outbox replays that message anyway
        status = msg.headers.get(_STATUS_HEADER) if msg.headers else None
        if status == _NO_RESPONDERS:
            self._settle(
                token, PublishRejected(self._pending[token][1], "no JetStream stream for this subject")
            )
            return
        answer: dict[str, Any] = orjson.loads(msg.data) if msg.data else {}
        error = answer.get("error")
        if error:
            self._settle(
                token, PublishRejected(self._pending[token][1], str(error.get("description", error)))
            )
        else:
            self._settle(token, None)

    def _expire(self, token: str) -> None:
        self._settle(token, BusDisconnected(f"no JetStream ack within {self._ack_timeout:g} s"))

    def _settle(self, token: str, failure: Exception | None) -> None:
        entry = self._pending.pop(token, None)
        if entry is None:
            return
        future, topic, timer = entry
        timer.cancel()
        if not future.done():
            if failure is None:
                self.stats.acked += 1
                future.set_result(None)
            else:
                if isinstance(failure, PublishRejected):
                    self.stats.rejected += 1
                    log.warning("JetStream refused a message on %s: %s", topic, failure.reason)
                future.set_exception(failure)
                future.exception()
        self._slot.set()

    # --------------------------------------------------------------------------------------- inbound

    async def _on_message(self, msg: Msg) -> None:
        stats, payload = self.stats, msg.data
        topic = mqtt_topic(msg.subject)
        if len(payload) > self._max_inbound_payload:
            stats.inbound_rejected_oversize += 1
            log.warning("NATS inbound message on %s rejected: %d bytes", topic, len(payload))
            return
        if self._inbound.qsize() >= self._inbound_limit:
            stats.inbound_dropped_overflow += 1
            log.warning("NATS inbound queue full (%d): dropped a message on %s", self._inbound_limit, topic)
            return
        stats.inbound += 1
        self._inbound.put_nowait(InboundMessage(topic, payload, 0, False))
