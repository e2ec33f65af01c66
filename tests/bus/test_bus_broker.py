"""EmbeddedBroker: a real mosquitto child that is started, restarted after a crash, and stopped cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.bus import BrokerError, BrokerMissing, EmbeddedBroker, MqttBus
from tests.helpers import MosquittoProcess, free_port


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[EmbeddedBroker]:
    embedded = EmbeddedBroker(free_port(), tmp_path / "broker")
    await embedded.start()
    yield embedded
    await embedded.stop()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_starts_on_a_free_port_and_serves_mqtt(broker: EmbeddedBroker) -> None:
    assert broker.pid is not None
    conf = broker.conf_path.read_text()
    assert f"listener {broker.port} 127.0.0.1" in conf
    assert "persistence false" in conf and "max_queued_messages 100000" in conf

    bus = MqttBus("127.0.0.1", broker.port, "embedded-client")
    bus.subscribe("t/#")
    await bus.start()
    try:
        assert await bus.wait_connected(5)
        await asyncio.wait_for(await bus.publish("t/x", b"hi"), 5)
        message = await asyncio.wait_for(anext(bus.messages()), 5)
        assert message.payload == b"hi"
        assert bus.inflight_limit == 1000, "max_inflight_messages reaches clients as Receive Maximum"
    finally:
        await bus.stop()


async def test_killed_broker_is_restarted_and_clients_reconnect(broker: EmbeddedBroker) -> None:
    bus = MqttBus("127.0.0.1", broker.port, "embedded-reconnect", reconnect_min=0.05, reconnect_max=0.5)
    await bus.start()
    try:
        assert await bus.wait_connected(5)
        first_pid = broker.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)

        async with asyncio.timeout(5):
            while not (broker.restarts == 1 and bus.connected and bus.connection_generation == 2):
                await asyncio.sleep(0.05)
        assert broker.pid is not None and broker.pid != first_pid
        await asyncio.wait_for(await bus.publish("t/after-restart", b"ok"), 5)
    finally:
        await bus.stop()


async def test_missing_binary_names_the_install_command(tmp_path: Path) -> None:
    broker = EmbeddedBroker(free_port(), tmp_path, binary="/nonexistent/mosquitto")
    with pytest.raises(BrokerMissing, match="sudo apt-get install -y mosquitto") as info:
        await broker.start()
    assert "/nonexistent/mosquitto" in str(info.value)


async def test_stop_leaves_no_process(tmp_path: Path) -> None:
    broker = EmbeddedBroker(free_port(), tmp_path)
    await broker.start()
    pid = broker.pid
    assert pid is not None and not _gone(pid)
    await broker.stop()
    assert broker.pid is None
    assert _gone(pid)


async def test_port_already_taken_is_reported(tmp_path: Path, mosquitto: MosquittoProcess) -> None:
    broker = EmbeddedBroker(mosquitto.port, tmp_path)
    with pytest.raises(BrokerError, match="already in use"):
        await broker.start()
    assert broker.pid is None


def test_refuses_a_non_loopback_listener(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        EmbeddedBroker(1883, tmp_path, host="0.0.0.0")
