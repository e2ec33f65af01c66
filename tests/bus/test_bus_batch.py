"""MqttBus.publish_batch: QoS 0 messages encoded in one buffer, checked with a paho subscriber (not our code)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import orjson
import pytest

from edge.bus import MqttBus, PublishRejected
from edge.bus.mqtt_batch import PublishEncoder
from edge.bus.publisher import LastValuePublisher
from edge.bus.topics import Topics
from edge.ops.stats import GatewayStats
from edge.sdk.events import TELEMETRY, Event, make_event
from tests.helpers import MosquittoProcess, MqttRecorder, until

_ids = itertools.count()


@pytest.fixture
async def bus(mosquitto: MosquittoProcess, request: pytest.FixtureRequest) -> AsyncIterator[MqttBus]:
    made = MqttBus("127.0.0.1", mosquitto.port, f"batch-{request.node.name[:30]}-{next(_ids)}")
    await made.start()
    assert await made.wait_connected(5)
    yield made
    await made.stop()


def test_encoder_writes_mqtt5_publish_packets() -> None:
    encoded = PublishEncoder().encode([("a/b", b"xy"), ("c", b"z" * 200)], retain=True)
    # retained QoS 0 PUBLISH, remaining length 2+3+1+2, topic, empty property list, payload
    first = bytes([0x31, 8, 0, 3]) + b"a/b" + b"\x00" + b"xy"
    # 2+1+1+200 = 204 = 0xCC: two varint bytes, 0x4C | 0x80 then 0x01
    second = bytes([0x31, 0xCC, 0x01, 0, 1]) + b"c" + b"\x00" + b"z" * 200
    assert bytes(encoded) == first + second
    assert PublishEncoder().encode([("t", b"")], retain=False) == bytearray([0x30, 4, 0, 1]) + b"t\x00"


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#", "a\x00b"])
def test_encoder_refuses_invalid_topics(topic: str) -> None:
    with pytest.raises(ValueError, match="invalid publish topic"):
        PublishEncoder().encode([(topic, b"x")], retain=True)


async def test_batch_arrives_in_order_and_retained(
    bus: MqttBus, mosquitto: MosquittoProcess, request: pytest.FixtureRequest
) -> None:
    prefix = f"batch/{request.node.name}/{next(_ids)}"
    messages = [(f"{prefix}/p{i}", f'{{"value":{i},"unit":"µ"}}'.encode()) for i in range(300)]
    messages.append((f"{prefix}/big", b"b" * 70_000))  # a Remaining Length of three bytes
    future = await bus.publish_batch(messages, qos=0, retain=True)
    await asyncio.wait_for(future, 5)
    assert (bus.stats.published, bus.stats.acked, bus.inflight) == (301, 301, 0)
    # written is not yet stored: a QoS 1 message behind them on the same connection is acknowledged after
    await asyncio.wait_for(await bus.publish(f"{prefix}-barrier", b"", qos=1), 5)
    late = MqttRecorder(mosquitto.port, f"{prefix}/#")  # only retained messages can reach it
    try:
        got = await asyncio.to_thread(late.wait_for, lambda m: len(m) >= len(messages), 10)
    finally:
        late.close()
    assert sorted((t, p) for t, p, _ in got) == sorted(messages)
    assert all(retained for _, _, retained in got)

    live = MqttRecorder(mosquitto.port, f"{prefix}/live/#")
    try:
        probe = (f"{prefix}/live/probe", b"subscribed?")  # the recorder's SUBSCRIBE may still be on its way
        for _ in range(50):
            await asyncio.wait_for(await bus.publish(*probe, qos=0), 5)
            await asyncio.sleep(0.1)
            if live.snapshot():
                break
        order = [(f"{prefix}/live/{i % 7}", str(i).encode()) for i in range(100)]
        await asyncio.wait_for(await bus.publish_batch(order), 5)
        got = await asyncio.to_thread(live.wait_for, lambda m: order[-1] in [(t, p) for t, p, _ in m], 10)
    finally:
        live.close()
    assert [
        (t, p) for t, p, _ in got if t != probe[0]
    ] == order  # one connection, QoS 0: the broker keeps the order


async def test_batch_checks_every_message_before_sending_any(
    bus: MqttBus, request: pytest.FixtureRequest
) -> None:
    topic = f"batch/{request.node.name}"
    with pytest.raises(PublishRejected, match="exceeds"):
        await bus.publish_batch([(f"{topic}/ok", b"x"), (f"{topic}/big", b"x" * (300 * 1024))])
    with pytest.raises(ValueError, match="invalid publish topic"):
        await bus.publish_batch([(f"{topic}/ok", b"x"), (f"{topic}/+", b"x")])
    assert bus.stats.published == 0


async def test_batch_above_qos0_is_acknowledged_per_message(
    bus: MqttBus, mosquitto: MosquittoProcess, request: pytest.FixtureRequest
) -> None:
    prefix = f"batch/{request.node.name}/{next(_ids)}"
    messages = [(f"{prefix}/{i}", b"v") for i in range(20)]
    await asyncio.wait_for(await bus.publish_batch(messages, qos=1, retain=True), 5)
    assert (bus.stats.published, bus.stats.acked) == (20, 20)
    assert await asyncio.wait_for(await bus.publish_batch([], qos=0), 1) is None


def _telemetry(device: str, values: dict[str, float], sequence: int) -> Event:
    points = {name: {"value": v, "unit": "W", "quality": "good"} for name, v in values.items()}
    return make_event(
        type=TELEMETRY,
        source="test",
        subject=f"roof/{device}",
        tenant="acme",
        time=1_700_000_000.0 + sequence,
        data={"site": "roof", "device": device, "points": points},
        device=device,
        sequence=sequence,
    )


async def test_point_topics_go_out_in_batches_and_come_back_after_a_broker_restart(
    private_mosquitto: MosquittoProcess, request: pytest.FixtureRequest
) -> None:
    bus = MqttBus(
        "127.0.0.1", private_mosquitto.port, f"lv-{next(_ids)}", reconnect_min=0.05, reconnect_max=0.2
    )
    topics = Topics(f"lv{next(_ids)}")
    stats = GatewayStats()
    points = LastValuePublisher(bus, topics, stats, qos=0, min_interval=0.05)
    await bus.start()
    assert await bus.wait_connected(5)
    task = asyncio.create_task(points.run())
    try:
        values = {f"p{i:03d}": float(i) for i in range(600)}  # more than one republish batch
        points.on_commit([_telemetry("inv-01", values, 1), _telemetry("inv-02", {"p000": 7.0}, 1)], 2)
        expected = {topics.point("acme", "roof", "inv-01", n): v for n, v in values.items()}
        expected[topics.point("acme", "roof", "inv-02", "p000")] = 7.0
        await until(lambda: stats.point_updates_published >= len(expected), within=10)
        # QoS 0 is counted acked once paho has written it to the socket, a loop turn after it was queued.
        assert await until(lambda: bus.stats.acked == len(expected), within=5)
        assert bus.stats.published == len(expected)

        private_mosquitto.kill()  # no persistence: the broker forgets every retained message
        private_mosquitto.start()
        assert await until(lambda: bus.connected and bus.connection_generation == 2, within=10)
        assert await until(lambda: stats.point_updates_published >= 2 * len(expected), within=10)
        # QoS 0 counts as published once handed to the socket; a QoS 1 message behind it on the same
        # connection is acknowledged only after the broker has taken every earlier one, so the late
        # subscriber below sees the republished topics as retained messages, not as live ones.
        barrier = await bus.publish_batch([(f"{topics.prefix}/barrier", b"")], qos=1)
        await asyncio.wait_for(barrier, 5)
        late = MqttRecorder(private_mosquitto.port, f"{topics.prefix}/acme/points/#")
        try:
            got = await asyncio.to_thread(late.wait_for, lambda m: len(m) >= len(expected), 10)
        finally:
            late.close()
        assert {t: orjson.loads(p)["value"] for t, p, _ in got} == expected
        assert all(retained for _, _, retained in got)
        assert orjson.loads(got[0][1])["sequence"] == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bus.stop()
