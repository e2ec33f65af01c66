"""The one place `[bus] mode` is read: which backend carries the local bus (edge.bus.base.Bus).

- "embedded" (default): the gateway's own Mosquitto (`EmbeddedBroker`, with the LAN listeners of
  `[[bus.listeners]]` and its persistence) and `MqttBus`, logged in as the broker's gateway user; with
  persistence, a `SessionGate` holds the events after each broker start until its restored sessions are back.
- "external": `MqttBus` to a broker someone else runs, with `[bus] username` and `password`.
- "nats": `NatsBus` to `[bus.nats] servers`, with per-tenant JetStream streams; in-process modules read
  their subscriptions from JetStream (`JetStreamFeed`) unless `[bus.nats] modules = "outbox"`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge.bus.access import GATEWAY_USER, AccessStore
from edge.bus.base import Bus
from edge.bus.broker import EmbeddedBroker, Persistence
from edge.bus.listeners import broker_listeners
from edge.bus.mqtt import MqttBus, Will
from edge.bus.publisher import SessionGate
from edge.bus.topics import Topics
from edge.config import LoadedConfig

__all__ = ["BusBackend", "open_bus"]


@dataclass(frozen=True)
class BusBackend:
    bus: Bus
    address: str  # for logs and health: host:port or the NATS servers
    broker: EmbeddedBroker | None = None  # started before and stopped after the bus
    login: tuple[str | None, str | None] = (None, None)  # what the MQTT dialects' own sessions log in as
    module_feed: object | None = None  # an edge.module_host.feed.EventFeed; None: the outbox
    session_gate: SessionGate | None = (
        None  # for the outbox publisher: the embedded broker's restored sessions
    )


def open_bus(
    loaded: LoadedConfig, topics: Topics, tenants: Iterable[str], member_id: str | None = None
) -> BusBackend:
    """`member_id`: in cluster mode the instance's own name (`<gateway>-<instance>`): instances share the
    broker, so each needs its own session and status topic."""
    config = loaded.config
    bus = config.bus
    member_id = member_id or config.gateway.id
    status_topic = topics.gateway_status(member_id)
    if bus.mode == "nats":
        return _nats(loaded, tenants, (status_topic, b"online", b"offline"), member_id)
    broker = None
    username, password = bus.username, bus.password
    if bus.mode == "embedded":
        access = AccessStore.for_config(loaded.data_dir, config)
        broker = EmbeddedBroker(
            bus.port,
            loaded.data_dir / "broker",
            host=bus.host,
            max_queued_messages=bus.max_queued_messages,
            message_size_limit=bus.max_payload,
            access=access,
            listeners=broker_listeners(bus, loaded.path.parent, loaded.data_dir)[1:],
            persistence=(
                Persistence(bus.autosave_interval, bus.session_expiry, bus.max_queued_bytes)
                if bus.persistence
                else None
            ),
        )
        # The embedded broker knows one gateway user, its own (docs/mqtt-access.md); [bus] username and
        # password are for an external broker.
        username, password = GATEWAY_USER, access.gateway_password()
    mqtt = MqttBus(
        bus.host,
        bus.port,
        client_id=f"edge-gateway-{member_id}",
        username=username,
        password=password,
        max_inflight=bus.max_inflight,
        will=Will(status_topic, b"offline"),
        birth=(status_topic, b"online"),
        max_inbound_payload=bus.max_payload,
        max_outbound_payload=bus.max_payload,
        reconnect_max=5.0,  # a local broker: come back within seconds of it
    )
    gate = None
    if broker is not None and broker.persistence is not None and bus.session_grace > 0:
        gate = SessionGate(mqtt, bus.session_grace)
        broker.on_start.append(gate.broker_started)
    return BusBackend(mqtt, f"{bus.host}:{bus.port}", broker, (username, password), session_gate=gate)


def _nats(
    loaded: LoadedConfig, tenants: Iterable[str], status: tuple[str, bytes, bytes], member_id: str
) -> BusBackend:
    # nats-py loads only for a gateway on the NATS bus
    from edge.bus.nats import NatsBus, StreamLimits, TenantStreams
    from edge.bus.nats_feed import JetStreamFeed

    bus = loaded.config.bus
    settings = bus.nats
    limits = StreamLimits(settings.max_age, settings.max_bytes, settings.replicas, settings.duplicate_window)
    nats_bus = NatsBus(
        list(settings.servers),
        f"edge-gateway-{member_id}",
        TenantStreams(bus.topic_prefix, tenants, limits),
        username=bus.username,
        password=bus.password,
        max_inflight=bus.max_inflight,
        ack_timeout=settings.ack_timeout,
        status=status,
        max_inbound_payload=bus.max_payload,
        max_outbound_payload=bus.max_payload,
    )
    feed = JetStreamFeed(nats_bus) if settings.modules == "jetstream" else None
    return BusBackend(nats_bus, ",".join(settings.servers), module_feed=feed)
