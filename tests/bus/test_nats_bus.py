"""The NATS JetStream bus end to end against a real nats-server: per-tenant streams read back by an independent
nats-py consumer and by paho over the server's MQTT listener (the CloudEvents SDK parses what they got), tenants
confined to their own account, and a server restart that loses nothing JetStream acknowledged."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import paho.mqtt.client as paho
import pytest
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from typer.testing import CliRunner

from edge.bus.nats import jetstream_name
from edge.bus.topics import mqtt_topic, nats_subject
from edge.cli import app
from edge.gateway import Gateway
from edge.sdk.errors import ConfigError
from edge.sdk.events import TELEMETRY, make_event
from edge.sdk.tenancy import tenant_scope
from tests.bus.nats_server import GATEWAY, NatsServer, gateway_config
from tests.e2e import load
from tests.helpers import until


def test_topics_map_to_subjects_as_nats_mqtt_listener_does() -> None:
    assert nats_subject("edge/acme/events/roof/inv-01") == "edge.acme.events.roof.inv-01"
    assert nats_subject("edge/+/cmd/module/+/+") == "edge.*.cmd.module.*.*"
    assert nats_subject("edge/acme/#") == "edge.acme.>"
    assert nats_subject("edge/acme/points/hq.north/ahu-1/t") == "edge.acme.points.hq//north.ahu-1.t"
    assert mqtt_topic("edge.acme.points.hq//north.ahu-1.t") == "edge/acme/points/hq.north/ahu-1/t"


async def _append(gateway: Gateway, tenant: str, device: str, sequence: int) -> str:
    event = make_event(
        type=TELEMETRY,
        source="/gw-nats/test",
        subject=f"roof/{device}",
        tenant=tenant,
        time=time.time(),
        data={"device": device, "site": "roof", "points": {"p": {"value": sequence, "quality": "good"}}},
        device=device,
        sequence=sequence,
    )
    with tenant_scope(gateway.tenants[tenant]):
        await gateway.outbox.append_durable(event)
    return event.id


async def _stream_events(server: NatsServer, tenant: str) -> list[dict[str, Any]]:
    """Every message of a tenant's events stream, read by an ephemeral consumer of our own (gateway account)."""
    nc = await nats.connect(server.url, user=GATEWAY.name, password=GATEWAY.password)
    try:
        js = nc.jetstream()
        stream = jetstream_name("edge", tenant, "events")
        info = await js.stream_info(stream)
        sub = await js.pull_subscribe(
            f"edge.{tenant}.events.>",
            stream=stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        out: list[dict[str, Any]] = []
        while len(out) < info.state.messages:
            for msg in await sub.fetch(500, timeout=5):
                event = JSONFormat().read(CloudEvent, msg.data)  # the CloudEvents SDK, not our code
                out.append(
                    {
                        "seq": msg.metadata.sequence.stream,
                        "id": event.get_id(),
                        "tenant": event.get_extension("tenantid"),
                        "sequence": int(event.get_extension("sequence")),
                        "device": event.get_data()["device"],  # type: ignore[index]
                        "msg_id": (msg.headers or {}).get("Nats-Msg-Id"),
                    }
                )
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


class MqttListener:
    """paho, MQTT 3.1.1 (what nats-server's MQTT listener speaks), logged in as a tenant's user."""

    def __init__(self, port: int, user: str, password: str, topic: str = "#") -> None:
        self.got: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"{user}-listener", protocol=paho.MQTTv311
        )
        self.client.username_pw_set(user, password)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK from nats-server's MQTT listener"

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.got.append((msg.topic, msg.payload))

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.got)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def listeners(nats_server: NatsServer) -> Iterator[dict[str, MqttListener]]:
    made = {
        "acme": MqttListener(nats_server.mqtt_port, "bms", "acme-secret"),
        "globex": MqttListener(nats_server.mqtt_port, "scada", "globex-secret"),
    }
    yield made
    for listener in made.values():
        listener.close()


async def test_events_land_in_per_tenant_streams_and_reach_mqtt_subscribers_of_their_tenant_only(
    tmp_path: Path, nats_server: NatsServer, listeners: dict[str, MqttListener]
) -> None:
    gateway = Gateway(*load(gateway_config(tmp_path / "edge.toml", nats_server)))
    await gateway.start()
    try:
        ids = {"acme": [], "globex": []}  # type: dict[str, list[str]]
        for sequence in range(1, 151):
            ids["acme"].append(await _append(gateway, "acme", "inv-01", sequence))
            if sequence <= 40:
                ids["globex"].append(await _append(gateway, "globex", "meter", sequence))

        async def published() -> bool:
            return await gateway.backlog() == 0

        await until(published, within=20.0)
    finally:
        await gateway.stop()

    for tenant, expected in ids.items():
        stored = await _stream_events(nats_server, tenant)
        assert [e["id"] for e in stored] == expected  # in outbox order, once each
        assert {e["tenant"] for e in stored} == {tenant}
        assert [e["sequence"] for e in stored] == list(range(1, len(expected) + 1))
        assert [e["msg_id"] for e in stored] == expected  # the event id: JetStream drops a replayed one

    def arrived() -> bool:
        events = [t for t, _ in listeners["acme"].snapshot() if "/events/" in t]
        return len(events) >= 150

    await until(arrived, within=10.0)
    acme = [(t, p) for t, p in listeners["acme"].snapshot() if "/events/" in t]
    assert {t for t, _ in acme} == {"edge/acme/events/roof/inv-01"}
    parsed = [JSONFormat().read(CloudEvent, p) for _, p in acme]
    assert [e.get_id() for e in parsed] == ids["acme"]
    # '#' also matches the '$' topics of the tenant's own account on nats-server 2.9 (its MQTT sessions)
    for tenant, other in (("acme", "globex"), ("globex", "acme")):
        topics = {t for t, _ in listeners[tenant].snapshot() if not t.startswith("$")}
        assert all(t.startswith(f"edge/{tenant}/") for t in topics), topics
        assert not any(other in t for t, _ in listeners[tenant].snapshot())
    assert len([t for t, _ in listeners["globex"].snapshot() if "/events/" in t]) == 40


async def test_a_tenant_reaches_only_its_own_subject_space(nats_server: NatsServer) -> None:
    gateway_nc = await nats.connect(nats_server.url, user=GATEWAY.name, password=GATEWAY.password)
    tenant_nc = await nats.connect(nats_server.url, user="bms", password="acme-secret")
    viewer_nc = await nats.connect(nats_server.url, user="viewer", password="viewer-secret")
    try:
        commands: list[str] = []
        seen_by_acme: list[str] = []

        async def command(msg: Any) -> None:
            commands.append(msg.subject)

        async def seen(msg: Any) -> None:
            seen_by_acme.append(msg.subject)

        await gateway_nc.subscribe("edge.*.cmd.>", cb=command)
        await tenant_nc.subscribe("edge.>", cb=seen)
        await gateway_nc.flush()
        await tenant_nc.flush()
        # acme's own write request reaches the gateway; one aimed at globex stays in acme's account
        await tenant_nc.publish("edge.acme.cmd.roof.inv-01.limit.set", b'{"value": 1}')
        await tenant_nc.publish("edge.globex.cmd.roof.meter.limit.set", b'{"value": 1}')
        await viewer_nc.publish("edge.acme.cmd.roof.inv-01.limit.set", b'{"value": 2}')  # read-only: refused
        await tenant_nc.flush()
        await viewer_nc.flush()
        # the gateway's events of both tenants: acme's user gets acme's only
        await gateway_nc.publish("edge.acme.events.roof.inv-01", b"{}")
        await gateway_nc.publish("edge.globex.events.roof.meter", b"{}")
        await gateway_nc.flush()

        def settled() -> bool:
            return "edge.acme.events.roof.inv-01" in seen_by_acme and len(commands) >= 1

        await until(settled, within=5.0)
        await asyncio.sleep(0.3)  # anything leaking would have arrived by now on loopback
        assert commands == ["edge.acme.cmd.roof.inv-01.limit.set"]
        assert not any(s.startswith("edge.globex.events") for s in seen_by_acme)
        # the tenant's own account has no JetStream view of the gateway's streams
        with pytest.raises(nats.js.errors.NotFoundError):
            await tenant_nc.jetstream().stream_info(jetstream_name("edge", "acme", "events"))
    finally:
        for nc in (gateway_nc, tenant_nc, viewer_nc):
            await nc.close()


async def test_a_nats_server_restart_mid_stream_loses_nothing_acknowledged(
    tmp_path: Path, private_nats: NatsServer
) -> None:
    gateway = Gateway(*load(gateway_config(tmp_path / "edge.toml", private_nats)))
    await gateway.start()
    appended: list[str] = []
    try:

        async def produce(count: int, start: int) -> None:
            for sequence in range(start, start + count):
                appended.append(await _append(gateway, "acme", "inv-01", sequence))
                if sequence % 20 == 0:
                    await asyncio.sleep(0.005)

        await produce(400, 1)
        private_nats.kill()  # mid-stream: publishes in flight lose their connection
        await produce(300, 401)  # stored durably meanwhile, published after the restart
        await asyncio.sleep(0.5)
        private_nats.start()  # same store: what JetStream acknowledged is still there
        await produce(300, 701)

        async def caught_up() -> bool:
            return gateway.bus.connected and await gateway.backlog() == 0

        await until(caught_up, within=30.0)
    finally:
        await gateway.stop()
    stored = await _stream_events(private_nats, "acme")
    assert [e["id"] for e in stored] == appended  # each once (duplicates dropped by Nats-Msg-Id), in order
    assert [e["sequence"] for e in stored] == list(range(1, 1001))


def test_config_check_refuses_mqtt_dialects_on_the_nats_bus(tmp_path: Path, nats_server: NatsServer) -> None:
    config = gateway_config(tmp_path / "edge.toml", nats_server)
    config.write_text(config.read_text().replace('entitlements = ["nats_probe"]', "[tenants.sparkplug]"))
    with pytest.raises(ConfigError) as caught:
        load(config)
    (issue,) = caught.value.issues
    assert issue.location == "tenants[0] (acme).sparkplug"
    assert "MQTT retained messages and last wills" in issue.reason


async def test_edge_module_command_gets_its_answer_through_the_nats_mqtt_listener(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    config = gateway_config(tmp_path / "edge.toml", nats_server)
    gateway = Gateway(*load(config))
    await gateway.start()
    try:
        args = ["module", "command", "alarms", "list", "-t", "acme", "-c", str(config), "--timeout", "10"]
        result = await asyncio.to_thread(CliRunner().invoke, app, args)
    finally:
        await gateway.stop()
    assert result.exit_code == 1, result.output  # answered (refused), not "no answer" (2)
    assert "refused: module 'alarms' is not running on this gateway" in result.output
