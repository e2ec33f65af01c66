"""What the rest of the gateway sees of the local bus, whichever backend carries it (docs/architecture.md).

`Bus` is the one interface: the outbox publisher, the retained latest values, commands in and results out,
Home Assistant discovery, status and health use only this. Topics are always written in the MQTT scheme of
`edge.bus.topics`; a backend that is not MQTT (NATS JetStream, `edge.bus.nats`) translates them itself, so
no caller knows which backend carries its events. Backends: `MqttBus` (the embedded Mosquitto or an
external broker) and `NatsBus`; `edge.bus.backend.open_bus` picks one from `[bus] mode`.

Delivery contract of every backend: `await publish()` waits until the bus is connected and has a free slot
in its bounded in-flight window, sends, and returns a future that resolves once the server confirmed the
message (PUBACK, JetStream ack) and fails with `BusDisconnected` when the connection drops first. Nothing is
kept across a reconnect: the outbox replays what failed (at-least-once).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from edge.sdk.errors import EdgeError

__all__ = [
    "Bus",
    "BusDisconnected",
    "BusError",
    "BusStats",
    "InboundMessage",
    "MessageProperties",
    "PublishRejected",
    "all_of",
]


class BusError(EdgeError):
    """Base of the local bus's errors."""


class BusDisconnected(BusError):
    """The bus is not connected, lost its connection before a publish was confirmed, or was stopped."""


class PublishRejected(BusError):
    """A message was refused, either before sending (too large) or by the server (PUBACK reason, JetStream error)."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"publish to {topic!r} rejected: {reason}")


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str  # in the MQTT scheme, whatever the backend
    payload: bytes
    qos: int
    retain: bool
    response_topic: str | None = None  # MQTT 5 request/response: where the sender wants the answer
    correlation_data: bytes | None = None  # MQTT 5: echoed with the answer, so the sender can match it


@dataclass(frozen=True, slots=True)
class MessageProperties:
    """MQTT 5 publish properties the gateway sets, in the bus's own terms: what the payload is (Content Type)
    and, on an answer, the request's Correlation Data. A backend without them (NATS) leaves them out."""

    content_type: str | None = None
    correlation_data: bytes | None = None


@dataclass(slots=True)
class BusStats:
    """Counters since the bus was created.

    ``acked`` counts confirmed publishes (PUBACK/PUBCOMP or a JetStream ack, or written for QoS 0);
    ``inbound`` counts messages accepted into the inbound queue.
    """

    published: int = 0
    acked: int = 0
    rejected: int = 0
    connects: int = 0
    disconnects: int = 0
    inbound: int = 0
    inbound_dropped_overflow: int = 0
    inbound_rejected_oversize: int = 0


class Bus(Protocol):
    """The local bus as the kernel uses it (see the module's docstring for the delivery contract)."""

    stats: BusStats
    on_connect_hooks: list[Callable[[], None]]  # run after every (re)connect, e.g. to republish state

    @property
    def connected(self) -> bool: ...
    @property
    def inflight(self) -> int: ...
    @property
    def inflight_limit(self) -> int: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def wait_connected(self, timeout: float | None = None) -> bool: ...  # noqa: ASYNC109
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
        """`message_id`: the event's id, for backends that drop a replayed duplicate (JetStream)."""
        ...

    async def publish_batch(
        self, messages: Sequence[tuple[str, bytes]], qos: int = 0, retain: bool = False
    ) -> asyncio.Future[None]:
        """Several (topic, payload) messages in order, as cheaply as the backend can (retained state); the
        future resolves once every one is confirmed and fails as `publish`'s does."""
        ...

    def subscribe(self, topic_filter: str, qos: int = 1, *, retain_as_published: bool = False) -> None:
        """`retain_as_published`: a message published retained keeps its retain flag also when delivered
        live (MQTT 5), so a consumer can refuse it; no effect where nothing is retained (NATS)."""
        ...

    def messages(self) -> AsyncIterator[InboundMessage]: ...


def all_of(futures: Sequence[asyncio.Future[None]]) -> asyncio.Future[None]:
    """One future for several publishes: done once all are, failed with the first failure (each outcome is
    retrieved, so a failed one never warns on its own)."""
    loop = asyncio.get_running_loop()
    combined: asyncio.Future[None] = loop.create_future()
    waiting = len(futures)
    if not waiting:
        combined.set_result(None)
        return combined

    def settle(future: asyncio.Future[None]) -> None:
        nonlocal waiting
        waiting -= 1
        failure = None if future.cancelled() else future.exception()
        if combined.done():
            return
        if future.cancelled():
            combined.set_exception(BusDisconnected("publish cancelled"))
        elif failure is not None:
            combined.set_exception(failure)
        elif waiting == 0:
            combined.set_result(None)

    for future in futures:
        future.add_done_callback(settle)
    return combined
