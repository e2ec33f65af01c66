"""EmbeddedBroker: a real mosquitto child that is started, restarted after a crash, and stopped cleanly."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from edge.bus import BrokerError, BrokerMissing, EmbeddedBroker, MqttBus
from edge.bus.access import AccessStore
from tests.helpers import MosquittoProcess, free_port, mqtt_connack, until


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
    with pytest.raises(BrokerError, match="already listens"):
        await broker.start()
    assert broker.pid is None


def test_refuses_a_non_loopback_listener(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        EmbeddedBroker(1883, tmp_path, host="0.0.0.0")


async def test_broker_gets_no_gateway_secret_and_no_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's environment holds the configuration's `env:` secrets; as root, the broker must not be."""
    monkeypatch.setenv("EDGE_WEBHOOK_SECRET", "whsec-not-for-the-broker")
    monkeypatch.setenv("TZ", "Europe/Zurich")
    access = AccessStore(tmp_path / "broker", "edge")
    _, password = access.add("acme", "bms")
    broker = EmbeddedBroker(free_port(), tmp_path / "broker", access=access)
    await broker.start()
    try:
        assert broker.pid is not None
        _assert_unprivileged(broker, psutil.Process(broker.pid))
        # and it still reads its files: a tenant user logs in, a wrong password does not
        assert mqtt_connack(broker.port, "bms@acme", password) == 0
        assert mqtt_connack(broker.port, "bms@acme", "wrong") != 0
    finally:
        await broker.stop()


def _assert_unprivileged(broker: EmbeddedBroker, process: psutil.Process) -> None:
    environ = process.environ()
    assert set(environ) <= {"PATH", "LANG", "TZ"} and environ["TZ"] == "Europe/Zurich", environ
    assert "whsec-not-for-the-broker" not in str(environ)
    if os.geteuid() != 0:
        return
    assert 0 not in process.uids() and 0 not in process.gids(), process.uids()
    assert process.username() in ("mosquitto", "nobody")
    for name in ("mosquitto.conf", "passwd", "acl", "conf.d/access.conf"):
        info = (broker.data_dir / name).stat()
        assert info.st_uid == process.uids().real and stat.S_IMODE(info.st_mode) == 0o600, name
    assert stat.S_IMODE(broker.data_dir.stat().st_mode) == 0o710


async def test_a_broker_left_over_from_an_earlier_run_is_stopped_and_a_recycled_pid_is_not(
    tmp_path: Path,
) -> None:
    """Where PDEATHSIG did not act, the next start finds the old broker by its pid file, its config and its
    working directory; a pid now used by another program is left alone."""
    first = EmbeddedBroker(free_port(), tmp_path / "broker")
    await first.start()
    await first.stop()  # leaves its config behind, as a killed gateway would
    leftover = await asyncio.create_subprocess_exec(
        shutil.which("mosquitto") or "/usr/sbin/mosquitto",
        "-c",
        "mosquitto.conf",
        cwd=first.data_dir,
        stderr=asyncio.subprocess.DEVNULL,
    )
    bystander = await asyncio.create_subprocess_exec("sleep", "30")
    try:
        first.pid_path.write_text(f"{leftover.pid}\n")
        await until(lambda: mqtt_connack(first.port) == 0, 5, "the left-over broker serving")
        again = EmbeddedBroker(first.port, first.data_dir)
        await again.start()
        await again.stop()
        assert await asyncio.wait_for(leftover.wait(), 5) is not None
        first.pid_path.write_text(f"{bystander.pid}\n")
        await again.start()
        await again.stop()
        assert bystander.returncode is None
    finally:
        for process in (leftover, bystander):
            if process.returncode is None:
                process.kill()
            await asyncio.wait_for(process.wait(), 5)
