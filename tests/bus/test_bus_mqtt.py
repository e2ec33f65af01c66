"""MqttBus against a real Mosquitto: delivery, PUBACK futures, back-pressure, reconnects, limits, will and birth."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from edge.bus import BusDisconnected, InboundMessage, MqttBus, PublishRejected, Will
from tests.helpers import MosquittoProcess, MqttRecorder, until

ROOT = Path(__file__).resolve().parents[2]
_ids = itertools.count()
MakeBus = Callable[..., MqttBus]


@pytest.fixture
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[MakeBus]:
    """Builds started-later buses with fast reconnects and unique client ids; stops them all at the end."""
    made: list[MqttBus] = []

    def make(port: int, **kwargs: Any) -> MqttBus:
        kwargs.setdefault("reconnect_min", 0.05)
        kwargs.setdefault("reconnect_max", 0.5)
        client_id = kwargs.pop("client_id", f"{request.node.name[:40]}-{next(_ids)}")
        bus = MqttBus("127.0.0.1", port, client_id, **kwargs)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.stop()


def _topic(request: pytest.FixtureRequest) -> str:
    return f"test/{request.node.name}/{next(_ids)}"


async def _started(*buses: MqttBus) -> None:
    for bus in buses:
        await bus.start()
    for bus in buses:
        assert await bus.wait_connected(5), "bus did not connect within 5 s"


async def _collect(bus: MqttBus, count: int, within: float = 10.0) -> list[InboundMessage]:
    got: list[InboundMessage] = []

    async def run() -> None:
        async for message in bus.messages():
            got.append(message)
            if len(got) >= count:
                return

    await asyncio.wait_for(run(), within)
    return got


@contextmanager
def _frozen(broker: MosquittoProcess) -> Iterator[None]:
    """SIGSTOP the broker: TCP still accepts bytes, but nothing is acknowledged until SIGCONT."""
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        if broker.proc is not None and broker.proc.poll() is None:
            broker.proc.send_signal(signal.SIGCONT)


async def test_5000_qos1_messages_all_acked_and_received(
    mosquitto: MosquittoProcess, make_bus: MakeBus, request: pytest.FixtureRequest
) -> None:
    topic = _topic(request)
    sub = make_bus(mosquitto.port)
    sub.subscribe(f"{topic}/#", qos=1)
    pub = make_bus(mosquitto.port, max_inflight=1000)
    await _started(sub, pub)

    futures = [await pub.publish(f"{topic}/m", str(i).encode(), qos=1) for i in range(5000)]
    await asyncio.wait_for(asyncio.gather(*futures), 15)
    got = await _collect(sub, 5000, within=15)

    assert sorted(int(m.payload) for m in got) == list(range(5000))
    assert all(m.topic == f"{topic}/m" and m.qos == 1 and not m.retain for m in got)
    assert pub.stats.published == pub.stats.acked == 5000
    assert pub.inflight == 0
    assert sub.stats.inbound == 5000


async def test_publish_future_resolves_only_on_puback(
    private_mosquitto: MosquittoProcess, make_bus: MakeBus, request: pytest.FixtureRequest
) -> None:
    pub = make_bus(private_mosquitto.port)
    await _started(pub)
    with _frozen(private_mosquitto):
        future = await pub.publish(_topic(request), b"x", qos=1)
        await asyncio.sleep(0.3)  # written to the socket long ago, but no PUBACK from a stopped broker
        assert not future.done()
    await asyncio.wait_for(future, 5)
    assert pub.stats.acked == 1


async def test_each_pubacks_reason_reaches_its_publish(
    tmp_path: Path, make_bus: MakeBus, request: pytest.FixtureRequest
) -> None:
    """A broker's PUBACK says success (delivered), success with "no matching subscribers", or a refusal: each
    publish learns its own, whether the ack is short (decoded by the bus) or carries a reason (by paho)."""
    broker = MosquittoProcess(tmp_path)
    (tmp_path / "acl").write_text("topic readwrite open/#\n")
    # started as root, Mosquitto would read the ACL as its own user, which cannot enter the test's folder
    broker.conf.write_text(broker.conf.read_text() + f"acl_file {tmp_path / 'acl'}\nuser root\n")
    broker.start()
    try:
        pub = make_bus(broker.port)
        await _started(pub)
        listener = MqttRecorder(broker.port, "open/heard")
        try:
            heard = await pub.publish("open/heard", b"1", qos=1)
            unheard = await pub.publish("open/unheard", b"2", qos=1)
            denied = await pub.publish("closed/x", b"3", qos=1)
            await asyncio.wait_for(heard, 5)
            await asyncio.wait_for(unheard, 5)
            with pytest.raises(PublishRejected, match="Not authorized"):
                await asyncio.wait_for(denied, 5)
            got = await asyncio.to_thread(listener.wait_for, lambda m: len(m) >= 1, 5)
        finally:
            listener.close()
        assert [(t, p) for t, p, _ in got] == [("open/heard", b"1")]
        assert (pub.stats.published, pub.stats.acked, pub.stats.rejected) == (3, 2, 1)
        assert pub.inflight == 0
    finally:
        broker.kill()


async def test_qos0_future_resolves_once_written(mosquitto: MosquittoProcess, make_bus: MakeBus) -> None:
    pub = make_bus(mosquitto.port)
    await _started(pub)
    future = await pub.publish("test/qos0", b"x", qos=0)
    await asyncio.wait_for(future, 5)


async def test_backpressure_never_more_than_max_inflight(
    private_mosquitto: MosquittoProcess, make_bus: MakeBus, request: pytest.FixtureRequest
) -> None:
    topic = _topic(request)
    pub = make_bus(private_mosquitto.port, max_inflight=10)
    await _started(pub)

    # With the broker frozen, the 11th publish has to wait for a free slot.
    with _frozen(private_mosquitto):
        first = [await pub.publish(topic, b"a") for _ in range(10)]
        eleventh = asyncio.ensure_future(pub.publish(topic, b"b"))
        await asyncio.sleep(0.3)
        assert not eleventh.done()
        assert pub.inflight == 10
    await asyncio.wait_for(asyncio.gather(*first), 5)
    await asyncio.wait_for(await asyncio.wait_for(eleventh, 5), 5)

    # In a steady stream, outstanding futures never exceed the window.
    futures: list[asyncio.Future[None]] = []
    peak = 0
    for i in range(500):
        futures.append(await pub.publish(topic, str(i).encode()))
        outstanding = sum(not f.done() for f in futures)
        peak = max(peak, outstanding)
        assert outstanding <= 10
        assert pub.inflight <= 10
    await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert peak == 10, "the window was never filled: the test did not exercise back-pressure"


async def test_cancelled_publish_wait_leaves_the_bus_usable(
    private_mosquitto: MosquittoProcess, make_bus: MakeBus, request: pytest.FixtureRequest
) -> None:
    topic = _topic(request)
    pub = make_bus(private_mosquitto.port, max_inflight=2)
    await _started(pub)
    with _frozen(private_mosquitto):
        held = [await pub.publish(topic, b"a"), await pub.publish(topic, b"b")]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pub.publish(topic, b"c"), 0.2)
    await asyncio.wait_for(asyncio.gather(*held), 5)
    await asyncio.wait_for(await pub.publish(topic, b"d"), 5)
    assert pub.stats.published == 3


async def test_retained_message_reaches_a_late_subscriber(
    mosquitto: MosquittoProcess, make_bus: MakeBus, request: pytest.FixtureRequest
) -> None:
    topic = _topic(request)
    pub = make_bus(mosquitto.port)
    await _started(pub)
    await asyncio.wait_for(await pub.publish(topic, b"state", retain=True), 5)

    late = make_bus(mosquitto.port)
    late.subscribe(topic)
    await _started(late)
    [message] = await _collect(late, 1, within=5)
    assert (message.topic, message.payload, message.retain) == (topic, b"state", True)


async def test_broker_loss_fails_futures_then_reconnects_and_resubscribes(
    private_mosquitto: MosquittoProcess,
    make_bus: MakeBus,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edge.bus.mqtt")
    topic = _topic(request)
    port = private_mosquitto.port
    sub = make_bus(port, reconnect_max=0.3)
    sub.subscribe(f"{topic}/#")
    pub = make_bus(port, max_inflight=100, reconnect_max=0.3)
    hook_calls: list[int] = []
    pub.on_connect_hooks.append(lambda: hook_calls.append(pub.connection_generation))
    await _started(sub, pub)
    assert pub.connection_generation == 1

    with _frozen(private_mosquitto):
        outstanding = [await pub.publish(f"{topic}/before", str(i).encode()) for i in range(20)]
        private_mosquitto.kill()  # SIGKILL works on a stopped process; the kernel closes its sockets
    results = await asyncio.wait_for(asyncio.gather(*outstanding, return_exceptions=True), 5)
    assert all(isinstance(r, BusDisconnected) for r in results)
    await until(lambda: not pub.connected and not sub.connected, within=5.0)

    private_mosquitto.start()  # same port
    assert await pub.wait_connected(5)
    assert await sub.wait_connected(5)
    assert pub.connection_generation == 2
    assert pub.stats.connects == 2 and pub.stats.disconnects == 1
    await until(lambda: hook_calls == [1, 2], within=5.0)

    await asyncio.wait_for(await pub.publish(f"{topic}/after", b"again"), 5)
    [message] = await _collect(sub, 1, within=5)
    assert (message.topic, message.payload) == (f"{topic}/after", b"again")

    lost = [r for r in caplog.records if r.getMessage().startswith("MQTT connection lost")]
    connected = [r for r in caplog.records if r.getMessage().startswith("MQTT connected to")]
    assert len(lost) == 2, "one loss line per bus, not one per retry"
    assert len(connected) == 4


async def test_oversize_inbound_rejected_and_counted(
    mosquitto: MosquittoProcess,
    make_bus: MakeBus,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = _topic(request)
    sub = make_bus(mosquitto.port, max_inbound_payload=1024)
    sub.subscribe(f"{topic}/#")
    pub = make_bus(mosquitto.port)
    await _started(sub, pub)

    await asyncio.wait_for(await pub.publish(f"{topic}/big", b"x" * 2048), 5)
    await asyncio.wait_for(await pub.publish(f"{topic}/small", b"ok"), 5)
    [message] = await _collect(sub, 1, within=5)

    assert (message.topic, message.payload) == (f"{topic}/small", b"ok")
    assert sub.stats.inbound_rejected_oversize == 1
    assert sub.stats.inbound == 1
    assert any(f"{topic}/big" in r.getMessage() and "2048 bytes" in r.getMessage() for r in caplog.records)


async def test_oversize_outbound_refused_before_sending(
    mosquitto: MosquittoProcess, make_bus: MakeBus
) -> None:
    pub = make_bus(mosquitto.port, max_outbound_payload=100)
    await _started(pub)
    with pytest.raises(PublishRejected, match="101 bytes"):
        await pub.publish("test/too-big", b"x" * 101)
    assert pub.stats.published == 0 and pub.connected


async def test_inbound_overflow_drops_newest(
    mosquitto: MosquittoProcess, make_bus: MakeBus, request: pytest.FixtureRequest
) -> None:
    topic = _topic(request)
    sub = make_bus(mosquitto.port, inbound_queue=5)
    sub.subscribe(topic)
    pub = make_bus(mosquitto.port)
    await _started(sub, pub)
    await asyncio.wait_for(asyncio.gather(*[await pub.publish(topic, str(i).encode()) for i in range(20)]), 5)
    await until(lambda: sub.stats.inbound + sub.stats.inbound_dropped_overflow == 20, within=5.0)

    assert (sub.stats.inbound, sub.stats.inbound_dropped_overflow) == (5, 15)
    got = await _collect(sub, 5, within=5)
    assert [m.payload for m in got] == [b"0", b"1", b"2", b"3", b"4"]


async def test_subscribe_while_connected_and_messages_end_after_stop(
    mosquitto: MosquittoProcess, make_bus: MakeBus, request: pytest.FixtureRequest
) -> None:
    topic = _topic(request)
    sub = make_bus(mosquitto.port)
    pub = make_bus(mosquitto.port)
    await _started(sub, pub)
    sub.subscribe(topic)
    await asyncio.sleep(0.2)  # SUBSCRIBE of a running bus is not awaited
    await asyncio.wait_for(await pub.publish(topic, b"hello"), 5)

    seen: list[bytes] = []

    async def consume() -> None:
        async for message in sub.messages():
            seen.append(message.payload)

    consumer = asyncio.create_task(consume())
    await until(lambda: seen == [b"hello"], within=5.0)
    await sub.stop()
    await asyncio.wait_for(consumer, 5)  # the iterator ended by itself
    with pytest.raises(BusDisconnected):
        await sub.publish(topic, b"late")


async def test_birth_on_connect_and_will_on_clean_stop(
    mosquitto: MosquittoProcess, make_bus: MakeBus, request: pytest.FixtureRequest
) -> None:
    status = _topic(request)
    watcher = make_bus(mosquitto.port)
    watcher.subscribe(status)
    await _started(watcher)
    gateway = make_bus(mosquitto.port, will=Will(status, b"offline"), birth=(status, b"online"))
    await _started(gateway)
    [born] = await _collect(watcher, 1, within=5)
    assert born.payload == b"online"

    await gateway.stop()  # DISCONNECT with reason 0x04: the broker publishes the will anyway
    [will] = await _collect(watcher, 1, within=5)
    assert will.payload == b"offline"


async def test_will_published_when_the_process_dies(
    mosquitto: MosquittoProcess, make_bus: MakeBus, request: pytest.FixtureRequest
) -> None:
    status = _topic(request)
    watcher = make_bus(mosquitto.port)
    watcher.subscribe(status)
    await _started(watcher)

    # A separate gateway process that SIGKILLs itself once connected: no DISCONNECT ever leaves it.
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from edge.bus import MqttBus, Will

        async def main():
            bus = MqttBus("127.0.0.1", {mosquitto.port}, "dying-{next(_ids)}",
                          will=Will({status!r}, b"offline"), birth=({status!r}, b"online"))
            await bus.start()
            assert await bus.wait_connected(5)
            await asyncio.sleep(0.2)  # let the birth message be acknowledged
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    got = await _collect(watcher, 2, within=5)
    assert [m.payload for m in got] == [b"online", b"offline"]
