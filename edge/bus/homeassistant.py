"""Home Assistant MQTT discovery: retained config topics so Home Assistant finds every device without mapping.

One Home Assistant device per gateway device, one entity per published point (edge/bus/ha_entities.py says
which component, device class, unit and state class). A point whose driver declares the kind of its values
(bool, integer, number, text) is announced at start, so a device down at start still shows all its entities
(unavailable); any other point once its first value shows the kind. That takes one commit listener call per
telemetry event, which stops looking at a device once all its points are announced.

What was announced is kept in `{data_dir}/homeassistant/discovery.json`: on start, entities whose device,
point or tenant setting is gone are removed (an empty retained message on their config topic, which is how
Home Assistant deletes them); after every reconnect all configs are published again, because a broker
without persistence forgets retained messages. Devices changed live (`devices_changed`, after a deployment or
commissioning) are treated the same way at once: a new or changed device's entities are announced, those of a
removed device or point are removed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from edge.bus.base import Bus, BusDisconnected
from edge.bus.ha_entities import Entity, entity_for, entity_id, kind_of
from edge.bus.topics import Topics
from edge.config.models import HomeAssistantConfig
from edge.sdk.drivers import DeviceSpec
from edge.sdk.events import TELEMETRY, Event
from edge.sdk.points import PointConfig, ValueKind

__all__ = ["HomeAssistantDiscovery"]

log = logging.getLogger(__name__)


class HomeAssistantDiscovery:
    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        gateway_id: str,
        tenants: Mapping[str, HomeAssistantConfig],
        devices: Iterable[DeviceSpec],
        data_dir: Path,
    ) -> None:
        self._bus = bus
        self._topics = topics
        self._gateway = gateway_id
        self._prefixes = {t: c.discovery_prefix for t, c in tenants.items() if c.enabled}
        self._devices: dict[str, DeviceSpec] = {}
        self._path = data_dir / "homeassistant" / "discovery.json"
        self._announced: dict[str, dict[str, Any]] = {}  # unique id -> {topic, payload, device, point}
        self._queue: dict[str, Entity] = {}
        self._removals: dict[str, str] = {}  # unique id -> config topic to empty
        self._republish = False
        self._wake = asyncio.Event()
        bus.on_connect_hooks.append(self._on_connect)
        # device -> its published points whose kind only a value tells, not announced yet; a device leaves
        # once all are
        self._waiting: dict[str, dict[str, PointConfig]] = {}
        self.devices_changed(devices)

    def devices_changed(self, devices: Iterable[DeviceSpec]) -> None:
        """The gateway's enabled devices (at start, and after each live change): announce the new and changed
        ones, remove the entities no device has any more."""
        before = self._devices
        self._devices = {d.name: d for d in devices if d.tenant in self._prefixes}
        current = self._current()
        for unique_id, entry in self._announced.items():
            if unique_id not in current:
                self._removals[unique_id] = entry["topic"]
        for unique_id in current:
            self._removals.pop(unique_id, None)
        for unique_id in [u for u in self._queue if u not in current]:
            del self._queue[unique_id]
        for name in [n for n in self._waiting if self._devices.get(n) != before.get(n)]:
            del self._waiting[name]
        for name, spec in self._devices.items():
            if before.get(name) != spec:
                self._track(spec)
        self._wake.set()

    def _track(self, spec: DeviceSpec) -> None:
        for point in spec.points:
            if not point.publish:
                continue
            if point.value_kind is None:
                self._waiting.setdefault(spec.name, {})[point.name] = point
            else:
                self._enqueue(spec, point, point.value_kind)

    def _current(self) -> set[str]:
        return {
            entity_id for spec in self._devices.values() for entity_id in _entity_ids(self._gateway, spec)
        }

    # ---- commit listener --------------------------------------------------------------------------------

    def on_commit(self, events: Sequence[Event], last_position: int) -> None:
        waiting = self._waiting
        if not waiting:
            return
        for event in events:
            if event.type != TELEMETRY or event.data is None:
                continue
            pending = waiting.get(event.data["device"])
            if pending is None:
                continue
            spec = self._devices[event.data["device"]]
            samples = event.data["points"]
            for name, point in list(pending.items()):  # only what is still unannounced
                sample = samples.get(name)
                if sample is None or sample["value"] is None:
                    continue
                self._enqueue(spec, point, kind_of(point, sample["value"]))
                del pending[name]
            if not pending:
                del waiting[spec.name]

    def _enqueue(self, spec: DeviceSpec, point: PointConfig, kind: ValueKind) -> None:
        entity = entity_for(self._topics, self._gateway, spec, point, kind, self._prefixes[spec.tenant])
        self._queue[entity.unique_id] = entity
        self._wake.set()

    def _on_connect(self) -> None:
        self._republish = True
        self._wake.set()

    # ---- publishing -------------------------------------------------------------------------------------

    async def run(self) -> None:
        self._load()
        await self._bus.wait_connected()
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except BusDisconnected:
                continue  # the reconnect hook publishes everything again

    async def _flush(self) -> None:
        for unique_id, topic in list(self._removals.items()):
            await self._publish(topic, b"")
            self._removals.pop(unique_id, None)  # devices_changed may have taken it back meanwhile
            self._announced.pop(unique_id, None)
            self._save()
        if self._republish:
            self._republish = False
            for unique_id, entry in list(self._announced.items()):
                if unique_id not in self._removals:
                    await self._publish(entry["topic"], entry["payload"].encode())
        changed = False
        try:
            while self._queue:
                unique_id, entity = next(iter(self._queue.items()))
                payload = orjson.dumps(entity.config).decode()
                previous = self._announced.get(unique_id)
                current = {"topic": entity.config_topic, "payload": payload}
                if previous != current:
                    # recorded before it is sent: a stop in between must not leave an entity no run knows of
                    self._announced[unique_id] = current
                    changed = True
                    if previous is not None and previous["topic"] != entity.config_topic:
                        # another component now: remove the old entity
                        await self._publish(previous["topic"], b"")
                    await self._publish(entity.config_topic, payload.encode())
                del self._queue[unique_id]
        finally:
            if changed:
                self._save()

    async def _publish(self, topic: str, payload: bytes) -> None:
        future = await self._bus.publish(topic, payload, qos=1, retain=True)
        await future

    # ---- what was announced -----------------------------------------------------------------------------

    def _load(self) -> None:
        """Read what an earlier run announced; queue the removal of entities that are gone."""
        try:
            announced: dict[str, dict[str, Any]] = orjson.loads(self._path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("Home Assistant discovery state %s unreadable (%s); starting afresh", self._path, exc)
            return
        current = self._current()
        for unique_id, entry in announced.items():
            self._announced[unique_id] = entry
            if unique_id not in current:
                self._removals[unique_id] = entry["topic"]
                log.info(
                    "Home Assistant entity %s is removed: its device, point or tenant setting is gone",
                    unique_id,
                )
        self._republish = True
        self._wake.set()

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_bytes(orjson.dumps(self._announced, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self._path)


def _entity_ids(gateway_id: str, spec: DeviceSpec) -> Iterable[str]:
    return (entity_id(gateway_id, spec, p.name) for p in spec.points if p.publish)
