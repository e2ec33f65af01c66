"""The bus opened to the site: a running gateway (`edge run`) with LAN listeners — MQTT over TLS, plain MQTT,
MQTT over WebSockets and a client-certificate listener — checked by paho clients as a BMS would connect.

Everything below runs against one gateway process (module fixture): certificates from `edge certs create`,
tenant logins from `edge tenant credentials add`, two simulated inverters, one per tenant.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from typer.testing import CliRunner

from edge.bus.access import GATEWAY_USER
from edge.cli import app
from tests.bus.site_clients import SiteClient
from tests.e2e import write_config
from tests.helpers import SimulatorProcess, free_port, wait_port, wait_until

EDGE = [sys.executable, "-m", "edge.cli"]
NS_HOST, NS_PEER = "10.213.77.1", "10.213.77.2"  # the gateway's and the BMS's address on the test link


@dataclass
class Site:
    config: Path
    port: int  # the gateway's own loopback listener
    tls: int
    plain: int
    ws: int
    wss: int  # WebSockets over TLS
    certs: int  # TLS, client certificate required
    ca: Path
    wrong_ca: Path
    acme: str  # passwords of bms@acme and bms@globex
    globex: str
    client_cert: tuple[Path, Path]  # bms@acme's certificate and key


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _password(output: str) -> str:
    return output.split("password: ")[1].split()[0]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("site")
    simulator = SimulatorProcess(free_port(), 2, ["--sim-time", "12:00"])
    simulator.start()
    port, tls, plain, ws, wss, certs = (free_port() for _ in range(6))
    config = write_config(tmp / "edge.toml", mqtt_port=port, modbus_port=simulator.port, devices=2, mode="embedded")  # fmt: skip
    config.write_text(
        config.read_text()
        + f"[[bus.listeners]]\nport = {tls}\n"
        + f'[[bus.listeners]]\nname = "lan-plain"\nport = {plain}\ntls = false\n'
        + f'[[bus.listeners]]\nport = {ws}\nprotocol = "websockets"\ntls = false\n'
        + f'[[bus.listeners]]\nport = {wss}\nprotocol = "websockets"\n'
        + f'[[bus.listeners]]\nname = "lan-certs"\nport = {certs}\nrequire_certificate = true\n'
    )
    hosts = ["--host", "localhost", "--host", "127.0.0.1", "--host", NS_HOST]
    _cli("certs", "create", "--profile", "broker", "-c", str(config), *hosts)
    _cli(
        "certs", "create", "--profile", "broker", "--out", str(tmp / "other-ca")
    )  # a CA the broker never used
    acme = _password(_cli("tenant", "credentials", "add", "acme", "bms", "-c", str(config)))
    globex = _password(_cli("tenant", "credentials", "add", "globex", "bms", "-c", str(config)))
    _cli("certs", "create", "--profile", "client", "--user", "bms@acme", "-c", str(config))
    broker_dir = tmp / "data" / "certs" / "broker"
    gateway = subprocess.Popen([*EDGE, "run", "-c", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        for listening in (port, tls, plain, ws, wss, certs):
            wait_port(listening, 20)
        # the broker accepts before the gateway has subscribed to write requests: wait for its first events
        watcher = SiteClient(port, "bms@acme", acme)
        watcher.subscribe("edge/acme/events/#")
        wait_until(lambda: watcher.messages(), 20, "the gateway's first event")
        watcher.close()
        yield Site(
            config, port, tls, plain, ws, wss, certs, broker_dir / "ca.pem", tmp / "other-ca" / "ca.pem", acme, globex,
            (broker_dir / "clients" / "bms@acme.pem", broker_dir / "clients" / "bms@acme.key"),
        )  # fmt: skip
    finally:
        gateway.terminate()
        _, stderr = gateway.communicate(timeout=30)
        simulator.stop()
    assert gateway.returncode == 0, stderr[-3000:]


def _sees_only_acme(client: SiteClient) -> None:
    """Subscribed to everything, it receives acme's live events and nothing of globex's."""
    client.subscribe("#", "edge/globex/#", "edge/+/events/#")
    wait_until(lambda: "edge/acme/events/roof/inv-01" in client.topics(), 15, "acme's events")
    time.sleep(0.5)
    topics = client.topics()
    assert all(t.startswith("edge/acme/") for t in topics), topics


def test_tls_listener_verifies_against_the_broker_ca_and_confines_the_tenant(site: Site) -> None:
    bms = SiteClient(site.tls, "bms@acme", site.acme, host="localhost", ca=site.ca)
    try:
        assert bms.connected, (bms.error, bms.refused)
        _sees_only_acme(bms)
    finally:
        bms.close()


def test_a_client_trusting_another_ca_refuses_the_broker(site: Site) -> None:
    client = SiteClient(site.tls, "bms@acme", site.acme, ca=site.wrong_ca)
    assert client.error is not None and "CERTIFICATE_VERIFY_FAILED" in client.error, client.error


def test_wrong_password_and_anonymous_are_refused_on_lan_listeners(site: Site) -> None:
    assert SiteClient(site.tls, "bms@acme", "wrong", ca=site.ca).refused in (
        134,
        135,
    )  # bad login, not authorized
    assert SiteClient(site.tls, ca=site.ca).refused is not None
    assert SiteClient(site.plain).refused is not None
    assert SiteClient(site.ws, transport="websockets").refused is not None
    assert SiteClient(site.port).refused is not None  # no anonymous anywhere once the bus is open


@pytest.mark.parametrize("listener", ["plain", "websockets", "websockets-tls"])
def test_a_tenant_user_is_confined_on_every_listener(site: Site, listener: str) -> None:
    port, transport, ca = {
        "plain": (site.plain, "tcp", None),
        "websockets": (site.ws, "websockets", None),
        "websockets-tls": (site.wss, "websockets", site.ca),
    }[listener]
    bms = SiteClient(port, "bms@acme", site.acme, transport=transport, ca=ca)
    other = SiteClient(port, "bms@globex", site.globex, transport=transport, ca=ca)
    try:
        assert bms.connected and other.connected
        _sees_only_acme(bms)
        other.subscribe("#")
        wait_until(lambda: "edge/globex/events/roof/inv-02" in other.topics(), 15, "globex's events")
        assert all(t.startswith("edge/globex/") for t in other.topics())
    finally:
        bms.close()
        other.close()


def test_a_client_certificate_logs_in_as_its_tenant_user(site: Site) -> None:
    bms = SiteClient(site.certs, host="localhost", ca=site.ca, cert=site.client_cert)
    try:
        assert bms.connected, (bms.error, bms.refused)
        _sees_only_acme(bms)
    finally:
        bms.close()
    without = SiteClient(site.certs, "bms@acme", site.acme, ca=site.ca)  # a password is not enough there
    assert not without.connected


def test_a_retained_write_request_is_not_executed_and_is_cleared(site: Site) -> None:
    bms = SiteClient(site.plain, "bms@acme", site.acme)
    try:
        bms.subscribe("edge/acme/cmd/#")
        bms.publish("edge/acme/cmd/roof/inv-01/power_limit/set", b'{"value": 37, "id": "kept"}', retain=True)
        # the gateway clears it: an empty retained message on the same topic
        wait_until(
            lambda: any(m.topic.endswith("/set") and m.payload == b"" for m in bms.messages()),
            10,
            "the clear",
        )
        time.sleep(0.5)
        assert not any(m.topic.endswith("/result") for m in bms.messages())  # never executed nor answered
    finally:
        bms.close()
    late = SiteClient(site.plain, "bms@acme", site.acme)  # a new subscriber gets no stored command
    try:
        late.subscribe("edge/acme/cmd/#")
        time.sleep(0.5)
        assert not any(m.topic.endswith("/set") for m in late.messages())
    finally:
        late.close()


def _request(response_topic: str, correlation: bytes) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = response_topic
    properties.CorrelationData = correlation
    return properties


def test_mqtt5_request_response_stays_in_the_tenant(site: Site) -> None:
    bms = SiteClient(site.tls, "bms@acme", site.acme, host="localhost", ca=site.ca)
    try:
        bms.subscribe("edge/acme/reply/#", "edge/acme/cmd/+/+/+/result")
        topic = "edge/acme/cmd/roof/inv-01/power_limit/set"
        bms.publish(
            topic, b'{"value": 40, "id": "r5"}', properties=_request("edge/acme/reply/bms", b"\x01corr")
        )
        answer = wait_until(
            lambda: next((m for m in bms.messages() if m.topic == "edge/acme/reply/bms"), None),
            15,
            "the answer",
        )
        assert answer.properties.CorrelationData == b"\x01corr"
        assert (
            orjson.loads(answer.payload)["ok"] is True and orjson.loads(answer.payload)["request_id"] == "r5"
        )
        assert any(m.topic.endswith("power_limit/result") for m in bms.messages())  # the result topic too
        bms.publish(topic, b'{"value": 41, "id": "r6"}', properties=_request("edge/globex/reply/x", b"c"))
        refused = wait_until(
            lambda: next((m for m in bms.messages() if b"edge/globex/reply" in m.payload), None),
            15,
            "refusal",
        )
        assert (
            orjson.loads(refused.payload)["ok"] is False
            and "outside edge/acme/reply/" in refused.payload.decode()
        )
    finally:
        bms.close()


def test_a_tenant_user_may_send_module_commands_in_its_tenant(site: Site) -> None:
    bms = SiteClient(site.plain, "bms@acme", site.acme)
    try:
        bms.subscribe("edge/acme/cmd/module/#")
        bms.publish("edge/acme/cmd/module/alarms/ack", b'{"args": {"alarm": "a1"}, "id": "m1"}')
        # delivered to the gateway (the ACL let it through): answered, here refused as acme has no alarms
        result = wait_until(
            lambda: next((m for m in bms.messages() if m.topic.endswith("alarms/ack/result")), None),
            15,
            "answer",
        )
        assert orjson.loads(result.payload)["request_id"] == "m1"
    finally:
        bms.close()


def test_events_carry_the_cloudevents_content_type(site: Site) -> None:
    gateway_login = (site.config.parent / "data" / "broker" / "gateway.password").read_text().strip()
    client = SiteClient(site.port, GATEWAY_USER, gateway_login)
    try:
        client.subscribe("edge/acme/events/#")
        event = wait_until(lambda: next(iter(client.messages()), None), 15, "an event")
        assert event.properties.ContentType == "application/cloudevents+json"
        assert orjson.loads(event.payload)["specversion"] == "1.0"
    finally:
        client.close()


def test_config_check_and_status_report_the_listeners(site: Site) -> None:
    checked = CliRunner().invoke(app, ["config", "check", str(site.config)])  # its own broker holds the ports
    assert checked.exit_code == 0, checked.output
    status = CliRunner().invoke(app, ["status", "-c", str(site.config), "--json"])
    rows = orjson.loads(status.output.splitlines()[-1])["certificates"]
    assert {r["listener"] for r in rows} == {f"mqtts-{site.tls}", f"wss-{site.wss}", "lan-certs"}
    assert all(360 <= r["days_left"] <= 365 and r["warning"] is False for r in rows)


# ---- the "done when": a BMS on another host of the site ------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def bms_host() -> Iterator[str]:
    """A second network namespace with its own address, linked to this host by a veth pair."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace (ip netns)")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is not installed: run scripts/setup.sh")
    name, veth = f"edge-bms-{os.getpid()}", f"vb{os.getpid() % 100000}"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
        _ip("link", "set", f"{veth}p", "netns", name)
        _ip("addr", "add", f"{NS_HOST}/30", "dev", veth)
        _ip("link", "set", veth, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{NS_PEER}/30", "dev", f"{veth}p")
        _ip("netns", "exec", name, "ip", "link", "set", f"{veth}p", "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "link", "del", veth], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


_BMS = """
import json, ssl, sys, time
import paho.mqtt.client as mqtt
host, port, user, password, ca = sys.argv[1:6]
got = []
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bms-remote", protocol=mqtt.MQTTv5)
c.username_pw_set(user, password)
c.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
c.on_connect = lambda cl, u, f, rc, p: cl.subscribe([("#", 1), ("edge/globex/#", 1)])
c.on_message = lambda cl, u, m: got.append(m.topic)
c.connect(host, int(port))
c.loop_start()
deadline = time.monotonic() + 15
while time.monotonic() < deadline and not any("/events/" in t for t in got):
    time.sleep(0.1)
time.sleep(1.0)
c.loop_stop()
print(json.dumps(sorted(set(got))))
"""


def test_a_bms_on_another_host_subscribes_over_tls_and_sees_only_its_tenant(
    site: Site, bms_host: str
) -> None:
    args = [NS_HOST, str(site.tls), "bms@acme", site.acme, str(site.ca)]
    done = subprocess.run(
        ["ip", "netns", "exec", bms_host, sys.executable, "-c", _BMS, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    topics = json.loads(done.stdout.splitlines()[-1])
    assert "edge/acme/events/roof/inv-01" in topics, topics
    assert all(t.startswith("edge/acme/") for t in topics), topics
