"""MQTT access for local systems: tenant users on the real embedded Mosquitto, confined to their tenant."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from typer.testing import CliRunner

from edge.bus.access import (
    AUTH_MARKER,
    GATEWAY_USER,
    AccessStore,
    mosquitto_hash,
    verify_mosquitto_hash,
)
from edge.bus.broker import BrokerError, EmbeddedBroker, reload_broker
from edge.cli import app
from tests.e2e import write_config
from tests.helpers import SimulatorProcess, free_port, wait_port, wait_until

EDGE = [sys.executable, "-m", "edge.cli"]


class Client:
    """A local system: a paho client with a username, recording what it receives and whether it dropped."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.disconnects = 0
        self.refused: int | None = None
        self._lock = threading.Lock()
        self._up = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"c-{free_port()}", protocol=mqtt.MQTTv5
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda *a: setattr(self, "disconnects", self.disconnects + 1)
        self._client.on_message = lambda c, u, m: self._record(m.topic, m.payload)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        self._up.wait(5)

    def _on_connect(self, client: object, userdata: object, flags: object, rc: object, props: object) -> None:
        if getattr(rc, "is_failure", False):
            self.refused = int(rc.value)  # type: ignore[attr-defined]
            self._client.disconnect()
        self._up.set()

    def _record(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.got.append((topic, payload))

    @property
    def connected(self) -> bool:
        return self.refused is None and self._client.is_connected()

    def subscribe(self, *topics: str) -> None:
        """Subscribe and wait for the broker's answer (a refused filter is answered too)."""
        acked = threading.Event()
        self._client.on_subscribe = lambda *a: acked.set()
        self._client.subscribe([(topic, 1) for topic in topics])
        assert acked.wait(5)

    def publish(self, topic: str, payload: bytes = b"x") -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(2)

    def topics(self) -> set[str]:
        with self._lock:
            return {t for t, _ in self.got}

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedBroker, AccessStore]]:
    access = AccessStore(tmp_path / "broker", "edge")
    broker = EmbeddedBroker(free_port(), tmp_path / "broker", access=access)
    await broker.start()
    yield broker, access
    await broker.stop()


def _reload(broker: EmbeddedBroker) -> None:
    assert reload_broker(broker.data_dir) == broker.pid
    time.sleep(0.3)  # Mosquitto applies SIGHUP in its next loop turn


def test_hashes_are_mosquitto_format_both_ways(tmp_path: Path) -> None:
    ours = mosquitto_hash("s3cret", salt=b"0123456789ab", iterations=101)
    assert ours.startswith("$7$101$MDEyMzQ1Njc4OWFi$") and verify_mosquitto_hash("s3cret", ours)
    assert not verify_mosquitto_hash("wrong", ours)
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")  # the broker tests below still check acceptance
    passwd = tmp_path / "pw"
    passwd.touch()
    subprocess.run([tool, "-b", str(passwd), "bms@acme", "p4ss"], check=True)
    assert verify_mosquitto_hash("p4ss", passwd.read_text().strip().split(":", 1)[1])


async def test_tenant_users_read_and_command_only_their_own_tenant(
    broker: tuple[EmbeddedBroker, AccessStore],
) -> None:
    server, access = broker
    _, acme_pw = access.add("acme", "bms")
    _, viewer_pw = access.add("acme", "dash", read_only=True)
    _, globex_pw = access.add("globex", "bms")
    _reload(server)
    gateway = Client(server.port, GATEWAY_USER, access.gateway_password())
    acme = Client(server.port, "bms@acme", acme_pw)
    viewer = Client(server.port, "dash@acme", viewer_pw)
    globex = Client(server.port, "bms@globex", globex_pw)
    try:
        assert gateway.connected and acme.connected and viewer.connected and globex.connected
        gateway.subscribe("edge/+/cmd/+/+/+/set")
        for client in (acme, viewer, globex):
            # Mosquitto grants these filters and checks the ACL on every message it would deliver
            client.subscribe("#", "edge/globex/#", "edge/acme/#", "edge/+/events/#")
        for tenant in ("acme", "globex"):
            gateway.publish(f"edge/{tenant}/events/roof/inv-01", b"{}")
            gateway.publish(f"edge/{tenant}/points/roof/inv-01/ac_power", b"{}")
            gateway.publish(f"edge/{tenant}/cmd/roof/inv-01/power_limit/result", b"{}")
        gateway.publish("edge/_gateway/gw/status", b"online")
        acme.publish("edge/acme/cmd/roof/inv-01/power_limit/set", b"40")  # its own device: allowed
        acme.publish("edge/globex/cmd/roof/inv-01/power_limit/set", b"41")  # another tenant's: dropped
        acme.publish("edge/acme/cmd/roof/inv-01/power_limit/result", b"{}")  # spoofed result: dropped
        viewer.publish("edge/acme/cmd/roof/inv-01/power_limit/set", b"42")  # read-only: dropped
        globex.publish("edge/acme/cmd/roof/inv-01/power_limit/set", b"43")  # another tenant's: dropped
        await asyncio.sleep(0.5)
        own = {"edge/acme/events/roof/inv-01", "edge/acme/points/roof/inv-01/ac_power", "edge/acme/cmd/roof/inv-01/power_limit/result"}  # fmt: skip
        globex_own = {t.replace("acme", "globex") for t in own}
        own.add("edge/acme/cmd/roof/inv-01/power_limit/set")  # its own, accepted write request
        assert acme.topics() == own and viewer.topics() == own
        assert globex.topics() == globex_own
        assert gateway.got == [("edge/acme/cmd/roof/inv-01/power_limit/set", b"40")]
        assert Client(server.port).refused is not None  # anonymous is off once a tenant has users
        assert Client(server.port, "bms@acme", "wrong").refused is not None
    finally:
        for client in (gateway, acme, viewer, globex):
            client.close()


async def test_changes_apply_on_reload_and_connected_clients_stay(
    broker: tuple[EmbeddedBroker, AccessStore],
) -> None:
    server, access = broker
    anonymous = Client(server.port)  # no tenant users yet: local anonymous clients still work
    assert anonymous.connected
    anonymous.close()
    _, acme_pw = access.add("acme", "bms")
    _, old = access.add("globex", "scada")
    _reload(server)
    gateway = Client(server.port, GATEWAY_USER, access.gateway_password())
    acme = Client(server.port, "bms@acme", acme_pw)
    globex = Client(server.port, "scada@globex", old)
    acme.subscribe("edge/acme/#")
    try:
        access.add("acme", "dashboard", read_only=True)
        _reload(server)
        gateway.publish("edge/acme/events/roof/inv-01", b"after reload")
        await asyncio.sleep(0.3)
        assert all(c.connected and c.disconnects == 0 for c in (gateway, acme, globex))
        assert ("edge/acme/events/roof/inv-01", b"after reload") in acme.got
        _, new = access.rotate("globex", "scada")
        _reload(server)
        await asyncio.sleep(0.3)
        assert not globex.connected  # its session used the rotated-out password: ended
        assert gateway.connected and acme.connected and gateway.disconnects == acme.disconnects == 0
        assert Client(server.port, "scada@globex", old).refused is not None
        fresh = Client(server.port, "scada@globex", new)
        assert fresh.connected
        fresh.close()
        access.remove("acme", "bms")
        _reload(server)
        gateway.publish("edge/acme/events/roof/inv-01", b"after removal")
        await asyncio.sleep(0.3)
        assert ("edge/acme/events/roof/inv-01", b"after removal") not in acme.got  # revoked at once
        assert Client(server.port, "bms@acme", acme_pw).refused is not None
        assert gateway.connected and gateway.disconnects == 0
    finally:
        for client in (gateway, acme, globex):
            client.close()


def test_credentials_cli_with_the_gateway_stopped(tmp_path: Path) -> None:
    config = str(
        write_config(
            tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=free_port(), devices=0, mode="embedded"
        )
    )
    runner = CliRunner()
    added = runner.invoke(app, ["tenant", "credentials", "add", "acme", "bms", "--read-only", "-c", config])
    assert added.exit_code == 0, added.output
    assert "username: bms@acme" in added.output and "applies this when it starts" in added.output
    listed = runner.invoke(app, ["tenant", "credentials", "list", "acme", "--json", "-c", config])
    (row,) = orjson.loads(listed.output)  # one JSON array, as every list's --json
    assert row["username"] == "bms@acme" and row["read_only"] is True
    password = added.output.split("password: ")[1].split()[0]
    assert (
        password not in listed.output and password not in (tmp_path / "data/broker/access.json").read_text()
    )
    assert (tmp_path / "data/broker/access.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "data/broker/gateway.password").stat().st_mode & 0o777 == 0o600
    acl = (tmp_path / "data/broker/acl").read_text()
    assert "user bms@acme\ntopic read edge/acme/#\n" in acl and "topic write edge/acme" not in acl
    again = runner.invoke(app, ["tenant", "credentials", "add", "acme", "bms", "-c", config])
    assert again.exit_code == 2 and "already has an MQTT user 'bms'" in again.output
    bad = runner.invoke(app, ["tenant", "credentials", "add", "acme", "a/b#", "-c", config])
    assert bad.exit_code == 2 and "letters, digits" in bad.output
    other = runner.invoke(app, ["tenant", "credentials", "remove", "globex", "bms", "-c", config])
    assert other.exit_code == 2 and "tenant 'globex' has no MQTT user 'bms'" in other.output
    unknown = runner.invoke(app, ["tenant", "credentials", "add", "initech", "bms", "-c", config])
    assert unknown.exit_code == 2 and "unknown tenant" in unknown.output
    assert runner.invoke(app, ["tenant", "credentials", "remove", "acme", "bms", "-c", config]).exit_code == 0
    assert (
        "has no MQTT users"
        in runner.invoke(app, ["tenant", "credentials", "list", "acme", "-c", config]).output
    )


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(free_port(), 2, ["--sim-time", "12:00"])
    sim.start()
    yield sim
    sim.stop()


def test_a_running_gateway_serves_tenant_users_and_their_commands(
    tmp_path: Path, simulator: SimulatorProcess
) -> None:
    port = free_port()
    config = str(write_config(tmp_path / "edge.toml", mqtt_port=port, modbus_port=simulator.port, devices=2, mode="embedded"))  # fmt: skip
    gateway = subprocess.Popen([*EDGE, "run", "-c", config], stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, 20)
        added = CliRunner().invoke(app, ["tenant", "credentials", "add", "acme", "bms", "-c", config])
        assert "applied to the running broker" in added.output, added.output
        acme = Client(port, "bms@acme", added.output.split("password: ")[1].split()[0])
        acme.subscribe("#")
        # the broker accepts before the gateway has subscribed to write requests: wait for its events first
        wait_until(lambda: "edge/acme/events/roof/inv-01" in acme.topics(), 15, "the gateway's events")
        acme.publish("edge/acme/cmd/roof/inv-01/power_limit/set", b'{"value": 40, "id": "r1"}')
        deadline = time.monotonic() + 10
        while (
            time.monotonic() < deadline
            and "edge/acme/cmd/roof/inv-01/power_limit/result" not in acme.topics()
        ):
            time.sleep(0.05)
        acme.close()
        # anonymous access is off now; `edge point write` logs in as the gateway
        written = CliRunner().invoke(app, ["point", "write", "inv-02", "power_limit", "30", "-c", config])
        assert written.exit_code == 0 and "written" in written.output, written.output
    finally:
        gateway.terminate()
        _, stderr = gateway.communicate(timeout=30)
    topics = acme.topics()
    assert "edge/acme/events/roof/inv-01" in topics  # the gateway, logged in as itself, still publishes
    result = dict(acme.got)["edge/acme/cmd/roof/inv-01/power_limit/result"]
    assert orjson.loads(result)["ok"] is True, result
    assert all(t.startswith("edge/acme/") for t in topics), topics  # inv-02 belongs to globex
    assert gateway.returncode == 0, stderr[-2000:]


async def test_once_users_existed_anonymous_access_never_comes_back(
    broker: tuple[EmbeddedBroker, AccessStore],
) -> None:
    server, access = broker
    access.add("acme", "bms")
    access.remove("acme", "bms")  # the last tenant user goes: the broker stays closed to anonymous clients
    _reload(server)
    assert (server.data_dir.parent / AUTH_MARKER).is_file()
    assert "allow_anonymous false" in access.conf_path.read_text()
    assert Client(server.port).refused is not None
    gateway = Client(server.port, GATEWAY_USER, access.gateway_password())
    assert gateway.connected
    gateway.close()


async def test_a_broker_whose_users_file_is_lost_refuses_to_start(tmp_path: Path) -> None:
    """A restore or a cleanup that loses `access.json` must not open every tenant's topics to anyone local."""
    AccessStore(tmp_path / "broker", "edge").add("acme", "bms")
    (tmp_path / "broker" / "access.json").unlink()
    lost = EmbeddedBroker(free_port(), tmp_path / "broker", access=AccessStore(tmp_path / "broker", "edge"))
    with pytest.raises(BrokerError, match=r"access\.json is missing") as refused:
        await lost.start()
    assert "edge tenant credentials add" in str(refused.value) and AUTH_MARKER in str(refused.value)
    assert lost.pid is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", lost.port), timeout=1).close()


def test_edge_run_says_in_one_line_why_the_broker_does_not_start(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=free_port(), devices=0, mode="embedded"
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / AUTH_MARKER).write_text("users existed\n")
    run = subprocess.run([*EDGE, "run", "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 3, run.stderr
    errors = [line for line in run.stderr.splitlines() if "access.json is missing" in line]
    assert len(errors) == 1 and "Traceback" not in run.stderr, run.stderr
