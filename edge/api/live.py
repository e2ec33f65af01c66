"""What the API knows without asking the database: each point's latest value, and live event streams.

Both are outbox commit listeners, so they see exactly the events that became durable, in commit order, and
never slow the commit path: `LatestValues` keeps one entry per point; `LiveFeed` drops each matching event
into a bounded per-client queue with `put_nowait`. A client whose queue is full is marked overflowed and
disconnected by its own task (policy in docs/api.md): the gateway never waits for a reader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from edge.sdk.events import COMMAND_RESULT, TELEMETRY, Event


@dataclass(frozen=True, slots=True)
class PointValue:
    value: Any
    quality: str
    unit: str | None
    reason: str | None
    time: float  # sample time of the event that carried it
    sequence: int | None


class LatestValues:
    """(tenant, device) -> point -> its newest sample; a device's pushed events may carry a subset of points.

    On commit only a (sample, time, sequence) tuple is stored per point (the hot path); `device` builds the
    `PointValue`s when asked."""

    def __init__(self) -> None:
        self._devices: dict[tuple[str, str], dict[str, tuple[dict[str, Any], float, int | None]]] = {}

    def on_commit(self, events: Sequence[Event], last_position: int) -> None:
        for event in events:
            if event.type == TELEMETRY and event.data is not None:
                self._store(event.tenant, event.data, event.time, event.sequence)

    def seed(self, tenant: str, body: bytes) -> None:
        """Fold in a stored telemetry event (at start, oldest first) so values are there before the next poll."""
        envelope = orjson.loads(body)
        data = envelope.get("data")
        if isinstance(data, dict) and isinstance(data.get("points"), dict):
            sequence = envelope.get("sequence")
            time = _seconds(envelope.get("time"))
            self._store(tenant, data, time, int(sequence) if sequence else None)

    def _store(self, tenant: str, data: dict[str, Any], time: float, sequence: int | None) -> None:
        points = self._devices.get((tenant, data["device"]))
        if points is None:
            points = self._devices[(tenant, data["device"])] = {}
        for name, sample in data["points"].items():
            points[name] = (sample, time, sequence)

    def device(self, tenant: str, device: str) -> dict[str, PointValue]:
        return {
            name: PointValue(
                sample.get("value"),
                sample.get("quality", "bad"),
                sample.get("unit"),
                sample.get("reason"),
                time,
                sequence,
            )
            for name, (sample, time, sequence) in self._devices.get((tenant, device), {}).items()
        }


def _seconds(stamp: Any) -> float:
    if not isinstance(stamp, str):
        return 0.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a stream wants; an empty set means any. `points` narrows telemetry to those points;
    `bricks` to points of those Brick classes, `haystack` to points carrying all those Haystack tags (the tags
    telemetry samples carry)."""

    types: frozenset[str] = frozenset()
    sites: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    points: frozenset[str] = frozenset()
    bricks: frozenset[str] = frozenset()
    haystack: frozenset[str] = frozenset()

    @property
    def narrows(self) -> bool:
        return bool(self.points or self.bricks or self.haystack)

    def wants(self, name: str, sample: Any) -> bool:
        """Whether a telemetry point is wanted: by name, Brick class and Haystack tags (each if asked)."""
        if self.points and name not in self.points:
            return False
        if not isinstance(sample, dict):
            return not (self.bricks or self.haystack)
        if self.bricks and sample.get("brick") not in self.bricks:
            return False
        return not self.haystack or self.haystack <= frozenset(sample.get("haystack") or ())

    def matches(self, event: Event) -> bool:
        if self.types and event.type not in self.types:
            return False
        data = event.data or {}
        if self.sites and data.get("site", event.subject.split("/", 1)[0]) not in self.sites:
            return False
        if self.devices and (event.device or data.get("device")) not in self.devices:
            return False
        if self.narrows:
            if event.type == TELEMETRY:
                return any(self.wants(k, v) for k, v in data.get("points", {}).items())
            return (
                event.type == COMMAND_RESULT
                and not (self.bricks or self.haystack)
                and data.get("point") in self.points
            )
        return True

    def render(self, event: Event) -> bytes:
        """The event as stored, or with its telemetry points narrowed to the requested ones."""
        if not self.narrows or event.type != TELEMETRY:
            return event.body
        envelope = orjson.loads(event.body)
        points = envelope["data"]["points"]
        envelope["data"]["points"] = {k: v for k, v in points.items() if self.wants(k, v)}
        return orjson.dumps(envelope)


@dataclass(eq=False)
class Subscriber:
    tenant: str
    filter: EventFilter
    queue: asyncio.Queue[Event]
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: int = 0


class LiveFeed:
    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._by_tenant: dict[str, set[Subscriber]] = {}
        self.dropped_clients = 0

    def subscribe(self, tenant: str, event_filter: EventFilter) -> Subscriber:
        subscriber = Subscriber(tenant, event_filter, asyncio.Queue(self.queue_size))
        self._by_tenant.setdefault(tenant, set()).add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._by_tenant.get(subscriber.tenant, set()).discard(subscriber)

    def clients(self, tenants: Iterable[str] | None = None) -> int:
        chosen = self._by_tenant if tenants is None else {t: self._by_tenant.get(t, set()) for t in tenants}
        return sum(len(s) for s in chosen.values())

    def on_commit(self, events: Sequence[Event], last_position: int) -> None:
        if not self._by_tenant:
            return
        for event in events:
            for subscriber in self._by_tenant.get(event.tenant, ()):
                if subscriber.overflowed.is_set() or not subscriber.filter.matches(event):
                    continue
                try:
                    subscriber.queue.put_nowait(event)
                except asyncio.QueueFull:
                    # Never wait for a reader: the client's own task closes it with the reason.
                    subscriber.overflowed.set()
                    self.dropped_clients += 1
