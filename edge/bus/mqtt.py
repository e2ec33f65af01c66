"""The MQTT backend of the local bus (`edge.bus.base.Bus`): paho-mqtt 2.x driven by the asyncio loop, on one thread.

paho is used the way its ``examples/loop_asyncio.py`` does: the socket is registered with
``loop.add_reader``/``add_writer`` through paho's ``on_socket_*`` callbacks and a 1 s task calls
``loop_misc()`` for keepalives, so every paho callback runs on the event loop and no lock is needed.
paho's ``connect()`` is blocking (DNS lookup and TCP connect, up to 5 s against a silent host), so it runs
in the loop's default executor; the socket is registered with the loop only once it has returned.

Delivery contract: ``await publish()`` waits until the bus is connected and fewer than the in-flight limit
of messages are unacknowledged, hands the message to paho and returns a future. The future resolves on the
broker's PUBACK (QoS 1), PUBCOMP (QoS 2) or once written (QoS 0), and fails with `BusDisconnected` when the
connection drops first. Nothing is queued across a reconnect (``clean_start=True``, paho's queue is dropped):
the gateway's SQLite outbox is the durability point and replays what failed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.bus.base import (
    BusDisconnected,
    BusError,
    BusStats,
    InboundMessage,
    MessageProperties,
    PublishRejected,
    all_of,
)
from edge.bus.mqtt_batch import PublishEncoder
from edge.sdk.backoff import Backoff
from edge.sdk.grid import sleep_until_next_tick

__all__ = ["MqttBus", "Will"]

log = logging.getLogger(__name__)

_MAX_INFLIGHT_CEILING: Final = 32_767  # half the 16-bit packet-id space: ids can never wrap onto a live one
_HANDSHAKE_TIMEOUT: Final = 10.0  # TCP connected -> CONNACK (and SUBACK) received
_STABLE_AFTER: Final = 10.0  # a connection that lasted this long resets the reconnect backoff
_DISCONNECT_GRACE: Final = 2.0  # stop(): time for the DISCONNECT packet to go out before the socket is cut
_READS_PER_WAKEUP: Final = 64  # loop_read() calls per readable event while they keep making progress
_CORK: Final[int | None] = getattr(socket, "TCP_CORK", None)  # Linux only
_LOG_EVERY: Final = 100  # rate limit for per-message warnings: the 1st, then every 100th


@dataclass(frozen=True, slots=True)
class Will:
    """Last will: published by the broker when the bus vanishes without a clean disconnect (and on stop())."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class _PackedOnce(Properties):
    """Properties packed once: paho packs a publish's properties for every message (6 µs each here), and the
    CloudEvents Content Type goes with every event."""

    def __init__(self, given: MessageProperties) -> None:
        super().__init__(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if given.content_type is not None:
            self.ContentType = given.content_type
        if given.correlation_data is not None:
            self.CorrelationData = given.correlation_data
        # paho's __setattr__ takes property names only
        object.__setattr__(self, "packed_once", super().pack())  # type: ignore[no-untyped-call]

    def pack(self) -> bytes:
        packed: bytes = self.__dict__["packed_once"]
        return packed


def _paho_properties(given: MessageProperties) -> Properties:
    if given.correlation_data is None:
        return _constant_properties(given)
    return _PackedOnce(given)  # an answer's: its request's correlation data, used once


_PUBACK_SUCCESS: Final = ReasonCode(PacketTypes.PUBACK)  # shared, never changed: see _Client
_PUBACK_NO_PROPERTIES: Final = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


class _Client(paho.Client):
    """paho's client, with the successful PUBACK decoded without building its reason code and properties.

    paho builds a `ReasonCode` and an empty `Properties` for every PUBACK (19 µs of CPU here, more than the
    publish itself): one event per device poll at QoS 1 made that the largest cost of reading the acks. A
    PUBACK that says success and carries no properties (2 bytes, or 3 or 4 with zeros in MQTT 5, what brokers
    send) completes with shared constant ones; anything else goes to paho as before. It relies on paho's
    `_in_packet`, `_out_messages`, `_out_message_mutex` and `_do_on_publish` (paho-mqtt 2.x, pinned below 3;
    tests/bus/test_bus_mqtt.py checks that each PUBACK's reason reaches its publish, with a paho subscriber)."""

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        packet: bytes | bytearray = self._in_packet["packet"]
        size = len(packet)
        if cmd == "PUBACK" and (
            size == 2
            or (self._protocol == MQTTProtocolVersion.MQTTv5 and 2 < size <= 4 and not any(packet[2:]))
        ):
            mid = (packet[0] << 8) | packet[1]
            with self._out_message_mutex:
                if mid in self._out_messages:
                    return self._do_on_publish(mid, _PUBACK_SUCCESS, _PUBACK_NO_PROPERTIES)
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_pubackcomp(cmd)


@functools.lru_cache(maxsize=16)  # the few constant ones (the events' content type) are packed once, ever
def _constant_properties(given: MessageProperties) -> Properties:
    return _PackedOnce(given)


class _Closed:
    """End-of-stream marker in the inbound queue."""


_CLOSED: Final = _Closed()


class _Session:
    """State of one connection attempt, from TCP connect to loss."""

    __slots__ = ("lost", "ready", "refused", "suback_mid")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ready: asyncio.Future[None] = loop.create_future()  # CONNACK ok and subscriptions acknowledged
        self.lost: asyncio.Future[str] = loop.create_future()  # result: why the connection ended
        self.refused: str | None = None  # CONNACK reason when the broker refused us
        self.suback_mid: int | None = None


class _PahoErrorTap(logging.Filter):
    """Keeps paho's last error line (e.g. 'failed to receive on socket: [Errno 104] ...') for the loss reason.

    paho reports socket errors only through its logger; this filter swallows them (the bus logs the loss
    itself, once) and passes them on at DEBUG.
    """

    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        self.last = record.getMessage()
        log.debug("paho: %s", self.last)
        return False


def _check_filter(topic_filter: str) -> None:
    levels = topic_filter.split("/")
    if not topic_filter or len(topic_filter.encode()) > 65_535:
        raise ValueError(f"invalid topic filter {topic_filter!r}")
    for i, level in enumerate(levels):
        if ("#" in level and (level != "#" or i != len(levels) - 1)) or ("+" in level and level != "+"):
            raise ValueError(f"invalid topic filter {topic_filter!r}")


async def _first_of(*futures: asyncio.Future[Any], within: float | None = None) -> None:
    """Wait until one of the futures is done, or the timeout passes; never raises for either."""
    await asyncio.wait(futures, timeout=within, return_when=asyncio.FIRST_COMPLETED)


_PAHO_PUBLISH: Final = 0x30  # paho's PUBLISH command, as its _packet_queue expects it


def _should_log(count: int) -> bool:
    return count == 1 or count % _LOG_EVERY == 0


class MqttBus:
    """One MQTT v5 connection to the local broker, kept up by a supervisor task."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 30,
        max_inflight: int = 1000,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        will: Will | None = None,
        birth: tuple[str, bytes] | None = None,
        inbound_queue: int = 10_000,
        max_inbound_payload: int = 256 * 1024,
        max_outbound_payload: int = 256 * 1024,
    ) -> None:
        if not 1 <= max_inflight <= _MAX_INFLIGHT_CEILING:
            raise ValueError(f"max_inflight must be 1..{_MAX_INFLIGHT_CEILING}, got {max_inflight}")
        if not 0 < reconnect_min <= reconnect_max:
            raise ValueError("need 0 < reconnect_min <= reconnect_max")
        if inbound_queue < 1:
            raise ValueError("inbound_queue must be >= 1")
        self._host = host
        self._port = port
        self._client_id = client_id
        self._keepalive = keepalive
        self._max_inflight = max_inflight
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._will = will
        self._birth = birth
        self._inbound_limit = inbound_queue
        self._max_inbound_payload = max_inbound_payload
        self._max_outbound_payload = max_outbound_payload

        self.stats = BusStats()
        self.on_connect_hooks: list[Callable[[], None]] = []

        self._subscriptions: dict[str, SubscribeOptions] = {}  # filter -> options, replayed on every connect
        self._watched: dict[str, Callable[[bytes], None]] = {}  # topic -> callback, never in the inbox
        # mid -> (future, topic, messages): a batch (publish_batch) is one entry of several messages
        self._pending: dict[int, tuple[asyncio.Future[None], str, int]] = {}
        self._encoder = PublishEncoder()
        self._early_acks: dict[int, ReasonCode] = {}  # acks seen inside client.publish(), before the mid
        self._sending = False
        self._packets_in = 0  # PUBLISH/PUBACK/SUBACK handled: progress marker for _on_readable
        self._window = max_inflight  # min(max_inflight, broker's Receive Maximum) once connected
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._inbox: asyncio.Queue[InboundMessage | _Closed] = asyncio.Queue()  # bounded by hand
        self._up = asyncio.Event()
        self._stopped = asyncio.Event()

        self._connected = False  # CONNACK ok and the subscriptions acknowledged: publishers may go
        self._mqtt_up = False  # CONNACK ok: a SUBSCRIBE can be sent right away
        self._generation = 0
        self._stopping = False
        self._closing = False  # we sent DISCONNECT ourselves
        self._connecting = False  # paho.connect() is running in the executor: hands off the client
        self._want_writer = False  # mirrors paho's "socket registered for write" flag
        self._cork: int | None = None  # TCP_CORK on a TCP connection (plain or TLS): see `_on_writable`
        self._session: _Session | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Future[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._misc: asyncio.Task[None] | None = None

        self._tap = _PahoErrorTap()
        self._client = self._make_client(username, password)

    # ----------------------------------------------------------------------------------------- public

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def connection_generation(self) -> int:
        """Increments on every successful (re)connect."""
        return self._generation

    @property
    def inflight(self) -> int:
        """Publishes handed to paho and not yet confirmed (QoS 0 ones until written)."""
        return len(self._pending)

    @property
    def inflight_limit(self) -> int:
        """max_inflight, lowered to the broker's Receive Maximum when that is smaller."""
        return self._window

    async def start(self) -> None:
        if self._supervisor is not None:
            raise RuntimeError("MqttBus.start() called twice")
        self._loop = asyncio.get_running_loop()
        self._stop_requested = self._loop.create_future()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"mqtt-bus:{self._client_id}")
        self._misc = asyncio.create_task(self._misc_loop(), name=f"mqtt-misc:{self._client_id}")
        for task in (self._supervisor, self._misc):
            task.add_done_callback(self._on_task_done)

    async def stop(self) -> None:
        """Disconnect cleanly (the broker still publishes the will) and end `messages()` iterators."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        if self._stop_requested is not None and not self._stop_requested.done():
            self._stop_requested.set_result(None)
        self._wake_all()
        self._up.set()  # wakes wait_connected(), which then reports False
        if self._supervisor is not None:
            await asyncio.wait({self._supervisor})  # it disconnects cleanly, then ends; a crash is logged
        if self._misc is not None:
            self._misc.cancel()
            await asyncio.wait({self._misc})
        self._fail_pending(BusDisconnected("MQTT bus stopped"))
        self._inbox.put_nowait(_CLOSED)
        self._stopped.set()

    async def wait_connected(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """True once connected (and subscribed); False on timeout or when the bus is stopped."""
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
        """Wait for the connection and a free in-flight slot, send, and return the delivery future.
        (`message_id` is unused: MQTT has no broker-side duplicate check; subscribers see replays.)

        The window counts QoS 1/2 messages until acknowledged and QoS 0 ones until written, so no kind of
        message piles up inside paho. Raises `PublishRejected` at once for a payload above
        max_outbound_payload: Mosquitto 2.0 answers an oversize QoS 1 message with a PUBACK code paho 2.2
        cannot parse, which would cost the whole connection.
        """
        if qos not in (0, 1, 2):
            raise ValueError(f"invalid QoS {qos}")
        if not topic or "+" in topic or "#" in topic:
            raise ValueError(f"invalid publish topic {topic!r}")
        if len(payload) > self._max_outbound_payload:
            self.stats.rejected += 1
            raise PublishRejected(
                topic, f"payload of {len(payload)} bytes exceeds the {self._max_outbound_payload}-byte limit"
            )
        if not self._connected or len(self._pending) >= self._window or self._slot_waiters:
            await self._wait_for_slot()
        packed = None if properties is None else _paho_properties(properties)
        return self._send(topic, payload, qos, retain, packed)

    async def publish_batch(
        self, messages: Sequence[tuple[str, bytes]], qos: int = 0, retain: bool = False
    ) -> asyncio.Future[None]:
        """Publish several (topic, payload) messages, in order; the future resolves once all are confirmed.

        At QoS 0 the batch is written as one buffer of PUBLISH packets (`edge.bus.mqtt_batch`) and takes one
        in-flight slot until written: what retained per-point topics cost per message drops from ~25 µs to
        ~1 µs. Above QoS 0 each message is published on its own. Every message is checked before any is
        sent: an invalid topic raises ValueError and an oversize payload `PublishRejected`, naming the topic.
        """
        if qos != 0:
            return all_of([await self.publish(t, p, qos, retain) for t, p in messages])
        for topic, payload in messages:
            if len(payload) > self._max_outbound_payload:
                self.stats.rejected += 1
                raise PublishRejected(
                    topic,
                    f"payload of {len(payload)} bytes exceeds the {self._max_outbound_payload}-byte limit",
                )
        packets = self._encoder.encode(messages, retain)
        if not messages:
            return all_of([])
        if not self._connected or len(self._pending) >= self._window or self._slot_waiters:
            await self._wait_for_slot()
        return self._send_packets(packets, messages[0][0], len(messages))

    def subscribe(self, topic_filter: str, qos: int = 1, *, retain_as_published: bool = False) -> None:
        """Remember a subscription; it is (re)made on every connect, and at once when connected.

        `retain_as_published`: deliver a message published with the retain flag with that flag set, also
        when it arrives live (by default only stored messages sent on subscribing carry it)."""
        _check_filter(topic_filter)
        if qos not in (0, 1, 2):
            raise ValueError(f"invalid QoS {qos}")
        options = SubscribeOptions(qos=qos, retainAsPublished=retain_as_published)
        self._subscriptions[topic_filter] = options
        if self._mqtt_up:
            self._client.subscribe(topic_filter, options=options)

    def watch(self, topic: str, callback: Callable[[bytes], None]) -> None:
        """Subscribe to one exact topic (QoS 0) whose payloads go to `callback` on the loop, not to
        `messages()` (broker state such as $SYS counters)."""
        self._watched[topic] = callback
        self.subscribe(topic, qos=0)

    async def messages(self) -> AsyncIterator[InboundMessage]:
        """Inbound messages, in arrival order; ends after stop(). Meant for one consumer."""
        while True:
            item = await self._inbox.get()
            if isinstance(item, _Closed):
                self._inbox.put_nowait(item)  # let any other iterator end too
                return
            yield item

    # ------------------------------------------------------------------------------------ supervisor

    async def _supervise(self) -> None:
        assert self._loop is not None
        backoff = Backoff(self._reconnect_min, self._reconnect_max)
        where = f"{self._host}:{self._port}"
        failures = 0
        outage_reported = False  # "unavailable" or "connection lost" was logged for the current outage
        while not self._stopping:
            try:
                session = await self._open_session()
            except (OSError, _HandshakeFailed) as exc:
                failures += 1
                delay = backoff.next_delay()
                if not outage_reported:
                    outage_reported = True
                    log.warning("MQTT broker %s unavailable: %s; retrying in the background", where, exc)
                log.debug("MQTT connect to %s failed (%d): %s; retry in %.2f s", where, failures, exc, delay)
                await self._sleep(delay)
                continue
            if session is None:  # stop() arrived while connecting
                break
            failures = 0
            outage_reported = False
            connected_at = self._loop.time()
            await _first_of(session.lost, self._stop_future())
            if not session.lost.done():  # stopping: clean disconnect
                await self._disconnect(session)
                break
            log.warning("MQTT connection lost: %s", session.lost.result())
            outage_reported = True
            if self._loop.time() - connected_at >= _STABLE_AFTER:
                backoff.reset()
            delay = backoff.next_delay()
            log.debug("MQTT reconnect to %s in %.2f s", where, delay)
            await self._sleep(delay)

    async def _open_session(self) -> _Session | None:
        assert self._loop is not None
        session = _Session(self._loop)
        self._session = session
        self._tap.last = None
        self._closing = False
        self._abort_connection()  # never let connect() close a socket the loop still watches
        self._connecting = True
        try:
            await self._loop.run_in_executor(None, self._blocking_connect)
        finally:
            self._connecting = False
        sock = self._client.socket()
        if sock is None:
            raise OSError("paho returned from connect() without a socket")
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            # paho sends each packet with its own send(): without this, Nagle plus delayed ACKs stall
            # small back-to-back packets (PUBLISH, PUBACK) for ~40 ms now and then.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._cork = _CORK
        self._loop.add_reader(sock, self._on_readable)
        if self._want_writer:
            self._loop.add_writer(sock, self._on_writable)
        if self._stopping:
            self._abort_connection()
            return None
        await _first_of(session.ready, session.lost, self._stop_future(), within=_HANDSHAKE_TIMEOUT)
        if session.ready.done():
            return session
        if session.lost.done():
            raise _HandshakeFailed(session.refused or session.lost.result())
        self._abort_connection()
        if self._stopping:
            return None
        raise _HandshakeFailed(f"no CONNACK within {_HANDSHAKE_TIMEOUT:g} s")

    def _blocking_connect(self) -> None:
        """Runs in the executor: paho's connect() resolves the host and connects the TCP socket."""
        self._client.connect(self._host, self._port, keepalive=self._keepalive, clean_start=True)

    async def _disconnect(self, session: _Session) -> None:
        self._closing = True
        # Reason 0x04 "disconnect with will message": the broker publishes the will on a clean stop as well,
        # so the gateway's retained status reads "offline" however it went away.
        code = 4 if self._will is not None else 0
        self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=code))
        await _first_of(session.lost, within=_DISCONNECT_GRACE)
        if not session.lost.done():
            self._abort_connection()

    def _abort_connection(self) -> None:
        """Cut the TCP connection and let paho notice it through its normal read path (callbacks fire)."""
        sock = self._client.socket()
        if sock is None:
            return
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for _ in range(10_000):  # reads whatever is still buffered, then EOF; bounded all the same
            if self._client.socket() is None:
                return
            self._client.loop_read()

    async def _sleep(self, delay: float) -> None:
        await _first_of(self._stop_future(), within=delay)

    def _stop_future(self) -> asyncio.Future[None]:
        assert self._stop_requested is not None
        return self._stop_requested

    async def _misc_loop(self) -> None:
        while True:
            await sleep_until_next_tick(1.0)  # with the gateway's other periodic work (edge.sdk.grid)
            if not self._connecting and self._client.socket() is not None:
                self._client.loop_misc()

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("MQTT bus task %s died", task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------------------------------ publishing

    async def _wait_for_slot(self) -> None:
        while True:
            if self._stopping:
                raise BusDisconnected("MQTT bus stopped")
            if self._connected and len(self._pending) < self._window:
                return
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were handed a slot we will not use: pass it on
                raise

    def _wake_one(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _send(
        self, topic: str, payload: bytes, qos: int, retain: bool, properties: Properties | None = None
    ) -> asyncio.Future[None]:
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self._sending = True
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        finally:
            self._sending = False
        mid = info.mid
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid in self._pending:
            # Not reachable while connected with the window bounded; never let a message go unaccounted.
            raise BusError(f"paho could not take the message for {topic!r}: {paho.error_string(info.rc)}")
        self.stats.published += 1
        self._pending[mid] = (future, topic, 1)
        if self._early_acks:
            early = self._early_acks.pop(mid, None)
            if early is not None:
                self._complete(mid, early)
        return future

    def _send_packets(self, packets: bytearray, topic: str, count: int) -> asyncio.Future[None]:
        """Hand already encoded QoS 0 PUBLISH packets to paho as one outgoing packet.

        paho has no public call for that: `_mid_generate` and `_packet_queue` are what its own `publish()`
        uses (paho-mqtt 2.x, pinned below 3; tests/bus checks the result with a paho subscriber). Queued as a
        QoS 0 PUBLISH, paho writes the buffer in order with everything else and calls `on_publish` with the
        mid once the last byte is written, which completes the batch as it completes a QoS 0 message."""
        assert self._loop is not None
        client = self._client
        if client.socket() is None:
            raise BusDisconnected("MQTT connection lost")
        mid = client._mid_generate()
        if mid in self._pending:
            raise BusError(f"paho could not take the batch for {topic!r}: message id {mid} in use")
        future: asyncio.Future[None] = self._loop.create_future()
        self._pending[mid] = (future, topic, count)
        self.stats.published += count
        self._sending = True
        try:
            client._packet_queue(_PAHO_PUBLISH, packets, mid, 0, paho.MQTTMessageInfo(mid))
        finally:
            self._sending = False
        if self._early_acks:
            early = self._early_acks.pop(mid, None)
            if early is not None:
                self._complete(mid, early)
        return future

    def _complete(self, mid: int, reason: ReasonCode) -> None:
        entry = self._pending.pop(mid, None)
        if entry is None:
            return
        future, topic, count = entry
        if not reason.is_failure:
            self.stats.acked += count
            if not future.done():
                future.set_result(None)
        else:
            self.stats.rejected += 1
            if _should_log(self.stats.rejected):
                log.warning(
                    "broker rejected a publish to %s: %s (%d rejected so far)",
                    topic,
                    reason,
                    self.stats.rejected,
                )
            if not future.done():
                future.set_exception(PublishRejected(topic, str(reason)))
                future.exception()  # mark retrieved: a caller that dropped the future gets no GC warning
        if self._slot_waiters:
            self._wake_one()

    def _fail_pending(self, exc: BusError) -> None:
        pending, self._pending = self._pending, {}
        self._early_acks.clear()
        for future, _topic, _count in pending.values():
            if not future.done():
                future.set_exception(exc)
                future.exception()  # see _complete

    # ------------------------------------------------------------------------------- paho callbacks

    def _make_client(self, username: str | None, password: str | None) -> paho.Client:
        client = _Client(
            CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        # The bus enforces its own window; paho's limit (if > 0) rescans every queued message on each ack.
        client.max_inflight_messages = 0
        client.max_queued_messages = 0
        if username is not None:
            client.username_pw_set(username, password)
        if self._will is not None:
            w = self._will
            client.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        paho_log = logging.Logger(f"{__name__}.paho[{self._client_id}]", logging.WARNING)
        paho_log.addFilter(self._tap)
        client.enable_logger(paho_log)
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        return client

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # Called from the executor thread inside connect(): _open_session registers the socket afterwards.
        if not self._connecting and self._loop is not None:
            self._loop.add_reader(sock, self._on_readable)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._want_writer = False
        if not self._connecting and self._loop is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._want_writer = True
        if not self._connecting and self._loop is not None:
            self._loop.add_writer(sock, self._on_writable)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._want_writer = False
        if not self._connecting and self._loop is not None:
            self._loop.remove_writer(sock)

    def _on_readable(self) -> None:
        # paho's loop_read() handles at most max(1, messages in flight) packets per call; a subscriber with
        # nothing in flight would take one selector round per message. Keep reading while it makes progress.
        for _ in range(_READS_PER_WAKEUP):
            before = self._packets_in
            self._client.loop_read()
            if self._packets_in == before or self._client.socket() is None:
                return

    def _on_writable(self) -> None:
        cork = self._cork
        sock = self._client.socket() if cork is not None else None
        if cork is None or not isinstance(sock, socket.socket):
            self._client.loop_write()
            return
        # What is queued goes out in as few segments as the kernel can make: paho sends each packet with its
        # own send(), and each segment wakes the broker, a wakeup whose CPU the sender pays too on a small box.
        sock.setsockopt(socket.IPPROTO_TCP, cork, 1)
        try:
            self._client.loop_write()
        finally:
            with contextlib.suppress(OSError):  # loop_write may have closed a broken connection
                sock.setsockopt(socket.IPPROTO_TCP, cork, 0)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        session = self._session
        if session is None:
            return
        if reason.is_failure:
            session.refused = f"broker refused the connection: {reason}"
            return
        self._mqtt_up = True
        receive_maximum = getattr(properties, "ReceiveMaximum", 65_535)
        self._window = max(1, min(self._max_inflight, receive_maximum))
        if self._birth is not None:
            topic, payload = self._birth
            self._send(topic, payload, 1, True)  # future failures are marked retrieved on loss
        if self._subscriptions:
            _rc, session.suback_mid = client.subscribe(list(self._subscriptions.items()))
        else:
            self._on_ready(session)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Any
    ) -> None:
        self._packets_in += 1
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.warning("MQTT broker refused a subscription (mid %d): %s", mid, ", ".join(failed))
        session = self._session
        if session is not None and mid == session.suback_mid:
            self._on_ready(session)

    def _on_ready(self, session: _Session) -> None:
        self._connected = True
        self._generation += 1
        self.stats.connects += 1
        self._up.set()
        log.info("MQTT connected to %s:%d", self._host, self._port)
        if not session.ready.done():
            session.ready.set_result(None)
        self._wake_all()
        if self.on_connect_hooks and self._loop is not None:
            self._loop.call_soon(self._run_hooks)

    def _run_hooks(self) -> None:
        for hook in list(self.on_connect_hooks):
            try:
                hook()
            except Exception:  # a faulty hook must not take the bus down; it is named in the log
                log.exception("MQTT on_connect hook %r failed", hook)

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        self._packets_in += 1
        if mid in self._pending:
            self._complete(mid, reason)
        elif self._sending:  # acked inside client.publish(), before _send recorded the mid
            self._early_acks[mid] = reason

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._packets_in += 1
        stats = self.stats
        payload = msg.payload if isinstance(msg.payload, bytes) else bytes(msg.payload)
        try:
            topic: str = msg.topic
        except UnicodeDecodeError:  # brokers must not forward these; drop rather than crash paho's read
            log.debug("MQTT inbound message with a non-UTF-8 topic dropped")
            return
        if len(payload) > self._max_inbound_payload:
            stats.inbound_rejected_oversize += 1
            if _should_log(stats.inbound_rejected_oversize):
                log.warning(
                    "MQTT inbound message on %s rejected: %d bytes > limit %d (%d rejected so far)",
                    topic,
                    len(payload),
                    self._max_inbound_payload,
                    stats.inbound_rejected_oversize,
                )
            return
        if self._watched:
            watcher = self._watched.get(topic)
            if watcher is not None:
                watcher(payload)
                return
        if self._inbox.qsize() >= self._inbound_limit:
            stats.inbound_dropped_overflow += 1
            if _should_log(stats.inbound_dropped_overflow):
                log.warning(
                    "MQTT inbound queue full (%d): dropped a message on %s (%d dropped so far)",
                    self._inbound_limit,
                    topic,
                    stats.inbound_dropped_overflow,
                )
            return
        stats.inbound += 1
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        self._inbox.put_nowait(
            InboundMessage(topic, payload, msg.qos, bool(msg.retain), response_topic, correlation)
        )

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        session = self._session
        if flags.is_disconnect_packet_from_server:
            why = f"broker sent DISCONNECT ({reason})"
        elif self._closing:
            why = "closed by the gateway"
        elif session is not None and session.refused:
            why = session.refused
        elif self._tap.last:
            why = self._tap.last
        elif str(reason) == "Unspecified error":
            why = "connection closed by the broker"
        else:
            why = str(reason)
        if self._connected:
            self.stats.disconnects += 1
        self._connected = False
        self._mqtt_up = False
        self._up.clear()
        self._fail_pending(BusDisconnected(f"MQTT connection lost: {why}"))
        client.drop_out_messages()  # with clean_start nothing may be resent: the outbox replays instead
        if session is not None and not session.lost.done():
            session.lost.set_result(why)


class _HandshakeFailed(Exception):
    """A connection attempt got a TCP connection but no usable MQTT session."""
