"""Sparkplug B (v3.0) output: one edge node per tenant that enables it, a Sparkplug device per gateway device.

Topics are `spBv1.0/{group}/{NBIRTH|NDEATH|NCMD}/{edge node}` and `spBv1.0/{group}/{DBIRTH|DDATA|DDEATH|DCMD}/
{edge node}/{device}`; payloads are Sparkplug B protobuf (edge/bus/sparkplug_payload.py).

Fed by outbox commit listeners, not by a durable consumer: Sparkplug is state, not history. A host learns
current values from births and changes from DDATA; after any gap (broker, gateway or host restart) the edge
node rebirths with current values instead of replaying stored events, and it holds no outbox rows back from
retention while no host listens. The outbox stays the place to replay history from (the events topics).

One MQTT session per edge node, because NDEATH is that session's will: each session gets the next bdSeq
(0-255, persisted in `{data_dir}/sparkplug/{tenant}.bdseq`, so a restarted gateway never reuses the bdSeq of
a death a host may still receive), registers NDEATH with it as the will, and puts the same bdSeq in its
NBIRTH. A broker reconnect therefore ends the session and opens a new one (new bdSeq, new births); a clean
stop disconnects with MQTT 5 reason 0x04, so the broker publishes NDEATH then too.

- seq: 0 on NBIRTH, +1 (mod 256) on every DBIRTH, DDATA and DDEATH of the session.
- Aliases: fixed per device point in configuration order, unique over the edge node; births carry name and
  alias, DDATA the alias only. Each metric carries `engUnit` and `Quality` (OPC: 192 good, 64 uncertain,
  0 bad) properties, and DDATA repeats `Quality` when it changed.
- A device is born (DBIRTH) with its first telemetry after it came up, dies (DDEATH) when it goes down.
- Devices changed live (`SparkplugOutput.devices_changed`, after a deployment or commissioning): a removed
  device dies (DDEATH), a changed one dies and is born again with its new metrics, an added one is born with
  its first telemetry. Sparkplug 3.0 asks no NBIRTH for that: a DBIRTH may follow any time after the session's
  NBIRTH (tck-id-message-flow-device-birth-publish-nbirth-wait), seq continuing. Their aliases are new ones,
  never given before in the node, so no alias a host learnt ever names another metric.
- NCMD `Node Control/Rebirth` = true publishes NBIRTH and every DBIRTH again (same bdSeq, seq from 0).
- DCMD metric writes go through `CommandHandler.write`: the `/set` path's checks, result topic and event.
- With `primary_host_id`, births wait for `spBv1.0/STATE/{host}` to say online; when it says offline the
  session ends (NDEATH) and the next one births once the host is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.bus import sparkplug_payload as spb
from edge.bus.base import BusDisconnected, InboundMessage, PublishRejected
from edge.bus.dialects import node_topics, state_topic
from edge.bus.mqtt import MqttBus, Will
from edge.config.models import SparkplugConfig
from edge.devices.commands import WriteOutcome, WriteRequest
from edge.sdk.drivers import DeviceSpec
from edge.sdk.errors import UnknownTarget
from edge.sdk.events import DEVICE_STATUS, TELEMETRY, Event
from edge.sdk.points import ValueKind

__all__ = ["BusFactory", "SparkplugNode", "SparkplugOutput"]

log = logging.getLogger(__name__)

BusFactory = Callable[[str, Will], MqttBus]  # (client id, will) -> a bus not yet started
Writer = Callable[[WriteRequest], Awaitable[WriteOutcome]]


@dataclass(slots=True)
class _Device:
    spec: DeviceSpec
    aliases: dict[str, int]  # published point -> alias
    points: dict[int, str]  # alias -> point
    units: dict[str, str | None]
    floats: frozenset[str]  # points that are scaled: always Double
    kinds: dict[str, ValueKind | None]  # as the driver declares them: the type of a point not read yet
    up: bool | None = None
    samples: dict[str, dict[str, Any]] = field(default_factory=dict)  # latest sample per point
    sample_ms: int = 0
    born: bool = False
    datatypes: dict[str, int] = field(default_factory=dict)  # as declared in the DBIRTH
    sent: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # point -> (value, quality) last published


def _device(spec: DeviceSpec, first_alias: int) -> _Device:
    published = [p for p in spec.points if p.publish]
    aliases = {p.name: first_alias + i for i, p in enumerate(published)}
    return _Device(
        spec,
        aliases,
        {a: n for n, a in aliases.items()},
        {p.name: p.unit for p in published},
        frozenset(p.name for p in published if p.is_scaled),
        {p.name: p.value_kind for p in published},
    )


class _BdSeq:
    """The birth/death sequence of one edge node, persisted so a restart continues after the last one."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def next(self) -> int:
        try:
            last = int(self._path.read_text().strip())
        except (FileNotFoundError, ValueError):
            last = -1
        value = (last + 1) % 256
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_text(f"{value}\n")
        os.replace(tmp, self._path)
        return value


class _SessionEnded(Exception):
    """This MQTT session is over (reconnect, host offline): open a new one with the next bdSeq."""


class SparkplugNode:
    """The edge node of one tenant."""

    def __init__(
        self,
        tenant: str,
        gateway_id: str,
        config: SparkplugConfig,
        devices: Sequence[DeviceSpec],
        connect: BusFactory,
        write: Writer,
        data_dir: Path,
    ) -> None:
        self.tenant = tenant
        self.topics = node_topics(tenant, gateway_id, config)
        self._primary = config.primary_host_id
        self._client_id = f"edge-spb-{gateway_id}-{tenant}"
        self._connect = connect
        self._write = write
        self._bdseq_store = _BdSeq(data_dir / "sparkplug" / f"{tenant}.bdseq")
        self._devices: dict[str, _Device] = {}
        self._next_alias = 1  # 0 stays free: node metrics go by name
        for spec in devices:
            self._add(spec)
        self._dying: list[_Device] = []  # removed or changed live: a DDEATH if the host knows them born
        self._pending: set[str] = set()  # devices with news since the last flush
        self._wake = asyncio.Event()
        self._host_online = self._primary is None
        self._host_timestamp = -1  # newest STATE timestamp seen; older (delayed) STATE messages are ignored
        self._born = False
        self._rebirth = False
        self._seq = 0
        self._bdseq = -1
        self._generation = 0  # the bus connection this session publishes on
        self._writes: set[asyncio.Task[None]] = set()
        self.stats = {"births": 0, "ddata": 0, "ddeath": 0, "writes": 0, "writes_refused": 0}

    def _add(self, spec: DeviceSpec) -> None:
        device = _device(spec, self._next_alias)
        self._devices[spec.name] = device
        self._next_alias += len(device.aliases)

    def set_devices(self, specs: Iterable[DeviceSpec]) -> None:
        """The node's devices are now these (a deployment or commissioning changed them live)."""
        wanted = {spec.name: spec for spec in specs}
        for name, device in list(self._devices.items()):
            if wanted.get(name) != device.spec:
                del self._devices[name]
                self._pending.discard(name)
                # born or not is looked at when its turn comes: its DBIRTH may be in flight now
                self._dying.append(device)
        for name, spec in wanted.items():
            if name not in self._devices:
                self._add(spec)  # born with its first telemetry
        self._wake.set()

    # ---- commit listener (hot path: store references, nothing else) -------------------------------------

    def accept(self, event: Event) -> None:
        kind, data = event.type, event.data
        if data is None or (kind != TELEMETRY and kind != DEVICE_STATUS):
            return
        device = self._devices.get(data.get("device", ""))
        if device is None:
            return
        if kind == TELEMETRY:
            device.samples = data["points"]
            device.sample_ms = int(event.time * 1000)
        else:
            device.up = data["status"] == "up"
        self._pending.add(device.spec.name)
        self._wake.set()

    # ---- sessions ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self._session()
            except _SessionEnded as why:
                log.info("Sparkplug node %s/%s: %s; new session", self.topics.group, self.topics.node, why)

    async def _session(self) -> None:
        self._bdseq = self._bdseq_store.next()
        death = spb.node_death(self._bdseq)
        bus = self._connect(
            self._client_id, Will(self.topics.node_topic("NDEATH"), death, qos=1, retain=False)
        )
        bus.subscribe(self.topics.node_topic("NCMD"), qos=1)
        bus.subscribe(self.topics.device_topic("DCMD", "+"), qos=1)
        if self._primary is not None:
            bus.subscribe(state_topic(self._primary), qos=1)
        ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_connect() -> None:
            if bus.connection_generation > 1 and not ended.done():
                ended.set_result("the broker connection was lost")

        bus.on_connect_hooks.append(on_connect)
        self._born = False
        for device in self._devices.values():
            device.born = False
        await bus.start()
        try:
            async with asyncio.TaskGroup() as group:
                inbound = group.create_task(self._inbound(bus, ended))
                publishing = group.create_task(self._publish_loop(bus, ended))
                await ended
                inbound.cancel()
                publishing.cancel()
            raise _SessionEnded(ended.result())
        finally:
            await bus.stop()  # MQTT 5 reason 0x04: the broker publishes NDEATH (the will) for this bdSeq

    async def _inbound(self, bus: MqttBus, ended: asyncio.Future[str]) -> None:
        async for message in bus.messages():
            try:
                self._handle(message, ended)
            except spb.PayloadError as exc:
                log.warning("Sparkplug %s: %s", message.topic, exc)

    def _handle(self, message: InboundMessage, ended: asyncio.Future[str]) -> None:
        if message.topic == self.topics.node_topic("NCMD"):
            if spb.rebirth_requested(message.payload):
                log.info("Sparkplug node %s/%s: rebirth requested", self.topics.group, self.topics.node)
                self._rebirth = True
                self._wake.set()
        elif self._primary is not None and message.topic == state_topic(self._primary):
            online, timestamp = spb.parse_state(message.payload)
            if timestamp is not None:
                if timestamp < self._host_timestamp:
                    return  # an older STATE delivered late
                self._host_timestamp = timestamp
            was, self._host_online = self._host_online, online
            if online and not was:
                log.info("Sparkplug primary host %s online: births follow", self._primary)
                self._wake.set()
            elif not online and self._born and not ended.done():
                ended.set_result(f"primary host {self._primary} went offline")
        else:
            device = message.topic.rsplit("/", 1)[-1]
            if message.topic == self.topics.device_topic("DCMD", device):
                task = asyncio.create_task(self._device_command(device, message.payload))
                self._writes.add(task)
                task.add_done_callback(self._writes.discard)

    async def _device_command(self, name: str, payload: bytes) -> None:
        device = self._devices.get(name)
        try:
            metrics = spb.command_metrics(payload)
        except spb.PayloadError as exc:
            self.stats["writes_refused"] += 1
            log.warning("Sparkplug DCMD for %s refused: %s", name, exc)
            return
        for metric_name, alias, datatype, value in metrics:
            point = metric_name
            if point is None and device is not None and alias is not None:
                point = device.points.get(alias)
            if device is None or point is None:
                self.stats["writes_refused"] += 1
                log.warning("Sparkplug DCMD for %s: unknown device or metric (alias %s)", name, alias)
                continue
            if datatype is None:
                datatype = device.datatypes.get(point)
            spec = device.spec
            request = WriteRequest(self.tenant, spec.site, spec.name, point, value, "sparkplug:DCMD")
            try:
                outcome = await self._write(request)
            except UnknownTarget as exc:
                self.stats["writes_refused"] += 1
                log.warning("Sparkplug DCMD %s.%s refused: %s", name, point, exc)
                continue
            self.stats["writes" if outcome.ok else "writes_refused"] += 1

    # ---- publishing -------------------------------------------------------------------------------------

    async def _publish_loop(self, bus: MqttBus, ended: asyncio.Future[str]) -> None:
        await bus.wait_connected()
        self._generation = bus.connection_generation
        if not self._host_online:
            log.info("Sparkplug node %s/%s waits for primary host %s", *self._names(), self._primary)
        self._wake.set()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if not self._host_online:
                    continue
                dying, self._dying = self._dying, []
                if self._born:  # a new session's host knows no device of the last one
                    for gone in dying:
                        await self._device_death(bus, gone)
                if not self._born or self._rebirth:
                    self._rebirth = False
                    await self._node_birth(bus)
                    continue  # the births carried every device's current state
                pending, self._pending = self._pending, set()
                for name in pending:
                    device = self._devices.get(name)
                    if device is not None:
                        await self._device_update(bus, device)
        except _SessionEnded as why:
            if not ended.done():
                ended.set_result(str(why))

    def _names(self) -> tuple[str, str]:
        return self.topics.group, self.topics.node

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    async def _node_birth(self, bus: MqttBus) -> None:
        self._seq = 0
        self._pending.clear()
        await self._send(bus, self.topics.node_topic("NBIRTH"), spb.node_birth(self._bdseq, self._next_seq()))
        self._born = True
        self.stats["births"] += 1
        for device in self._devices.values():
            device.born = False
            await self._device_update(bus, device)

    async def _device_update(self, bus: MqttBus, device: _Device) -> None:
        topic_of = self.topics.device_topic
        if device.up is False:
            await self._device_death(bus, device)
            return
        samples = device.samples
        if not samples:
            return
        if device.born and any(not spb.fits(device.datatypes.get(n), s["value"]) for n, s in samples.items()):
            device.born = False  # a value no longer fits its declared type: declare the device again
        if not device.born:
            device.datatypes = {
                name: spb.datatype_of(
                    samples.get(name, {}).get("value"), name in device.floats, device.kinds[name]
                )
                for name in device.aliases
            }
            metrics = [self._metric(device, name, samples.get(name), birth=True) for name in device.aliases]
            await self._send(bus, topic_of("DBIRTH", device.spec.name), spb.data(metrics, self._next_seq()))
            device.born = True
            device.sent = {n: (s["value"], s["quality"]) for n, s in samples.items()}
            return
        sent = device.sent
        changed = []
        for name, sample in samples.items():
            now = (sample["value"], sample["quality"])
            last = sent.get(name)
            if last != now and name in device.aliases:
                changed.append(
                    self._metric(device, name, sample, quality=last is None or last[1] != now[1], birth=False)
                )
                sent[name] = now
        if changed:
            await self._send(bus, topic_of("DDATA", device.spec.name), spb.data(changed, self._next_seq()))
            self.stats["ddata"] += 1

    async def _device_death(self, bus: MqttBus, device: _Device) -> None:
        if device.born:
            device.born = False
            payload = spb.device_death(self._next_seq())
            await self._send(bus, self.topics.device_topic("DDEATH", device.spec.name), payload)
            self.stats["ddeath"] += 1

    def _metric(
        self,
        device: _Device,
        name: str,
        sample: dict[str, Any] | None,
        *,
        birth: bool,
        quality: bool = True,
    ) -> spb.Metric:
        value = sample["value"] if sample else None
        return spb.Metric(
            name=name if birth else None,
            alias=device.aliases[name],
            datatype=device.datatypes[name],
            value=value,
            timestamp=device.sample_ms,
            unit=device.units[name] if birth else None,
            quality=(sample["quality"] if sample else "bad") if (birth or quality) else None,
        )

    async def _send(self, bus: MqttBus, topic: str, payload: bytes) -> None:
        if bus.connection_generation != self._generation:
            raise _SessionEnded("the broker connection was lost")  # nothing of this session on the next one
        try:
            future = await bus.publish(topic, payload, qos=0)
        except PublishRejected as exc:
            log.error("Sparkplug %s not published: %s", topic, exc.reason)
            return
        except BusDisconnected:
            raise _SessionEnded("the broker connection was lost") from None
        future.add_done_callback(_ignore_outcome)


class SparkplugOutput:
    """Every tenant's edge node; one commit listener routes committed events to them by tenant."""

    def __init__(
        self,
        gateway_id: str,
        tenants: Mapping[str, SparkplugConfig],
        devices: Iterable[DeviceSpec],
        connect: BusFactory,
        write: Writer,
        data_dir: Path,
    ) -> None:
        specs = list(devices)
        self.nodes = {
            tenant: SparkplugNode(
                tenant,
                gateway_id,
                config,
                [d for d in specs if d.tenant == tenant],
                connect,
                write,
                data_dir,
            )
            for tenant, config in tenants.items()
            if config.enabled
        }

    def devices_changed(self, devices: Iterable[DeviceSpec]) -> None:
        """The gateway's enabled devices after a live change: each node takes its tenant's."""
        specs = list(devices)
        for tenant, node in self.nodes.items():
            node.set_devices(d for d in specs if d.tenant == tenant)

    def on_commit(self, events: Sequence[Event], last_position: int) -> None:
        nodes = self.nodes
        for event in events:
            node = nodes.get(event.tenant)
            if node is not None:
                node.accept(event)


def _ignore_outcome(future: asyncio.Future[None]) -> None:
    # QoS 0 state: a lost message is healed by the next session's births. Retrieve the outcome for asyncio.
    if not future.cancelled():
        with contextlib.suppress(Exception):
            future.exception()
