"""The read planner: points in, BACnet read requests out. Pure and deterministic; no I/O.

Points are grouped by object, in the order the objects first appear. Each object is read once per poll with
every property its points need, plus Status_Flags when a point asks for quality from it. Objects are batched
into ReadPropertyMultiple requests of at most `max_objects` objects; a device without ReadPropertyMultiple
gets the same requests sent as one ReadProperty per (object, property).

A value is found in a response by its key `(object type number, instance, property number, array index)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bacpypes3.basetypes import PropertyReference
from bacpypes3.primitivedata import ObjectIdentifier, PropertyIdentifier

from drivers.bacnet.config import COV_TYPES, BacnetPoint

Key = tuple[int, int, int, int | None]  # object type, instance, property, array index
ObjectKey = tuple[int, int]

PRESENT_VALUE = PropertyIdentifier("present-value")
STATUS_FLAGS = PropertyIdentifier("status-flags")
RELIABILITY = PropertyIdentifier("reliability")


def key_of(object_id: Any, property_id: Any, array_index: int | None) -> Key:
    return (int(object_id[0]), int(object_id[1]), int(property_id), array_index)


@dataclass(frozen=True, slots=True)
class Target:
    """Where one point's value comes from, and how to read it."""

    index: int  # into BacnetPlan.points (and the list `read` returns)
    object_id: ObjectIdentifier
    property_id: PropertyIdentifier
    array_index: int | None
    kind: str  # analog | binary | multistate | other
    states: tuple[str, ...] | None
    with_status: bool  # qualify the value with the object's Status_Flags

    @property
    def object_key(self) -> ObjectKey:
        return (int(self.object_id[0]), int(self.object_id[1]))

    @property
    def key(self) -> Key:
        return key_of(self.object_id, self.property_id, self.array_index)

    @property
    def status_key(self) -> Key:
        return key_of(self.object_id, STATUS_FLAGS, None)

    @property
    def cov_fed(self) -> bool:
        """True if a COV notification of its object carries this point's value."""
        if self.array_index is not None or str(self.object_id[0]) not in COV_TYPES:
            return False
        return self.property_id in (PRESENT_VALUE, STATUS_FLAGS)


@dataclass(frozen=True, slots=True)
class ObjectRead:
    object_id: ObjectIdentifier
    properties: tuple[tuple[PropertyIdentifier, int | None], ...]

    def keys(self) -> list[Key]:
        return [key_of(self.object_id, p, i) for p, i in self.properties]


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One ReadPropertyMultiple (or its ReadProperty equivalents) and the points it feeds."""

    objects: tuple[ObjectRead, ...]
    targets: tuple[int, ...]

    def rpm_arguments(self) -> list[Any]:
        """bacpypes3's flat `[object id, [property references], object id, ...]` parameter list."""
        out: list[Any] = []
        for obj in self.objects:
            refs = []
            for prop, index in obj.properties:
                ref = PropertyReference(propertyIdentifier=prop)
                if index is not None:
                    ref.propertyArrayIndex = index
                refs.append(ref)
            out += [obj.object_id, refs]
        return out

    @property
    def property_count(self) -> int:
        return sum(len(o.properties) for o in self.objects)


@dataclass(frozen=True, slots=True)
class BacnetPlan:
    """A device's compiled read plan. `points` keeps the configured order: `read` returns values in it."""

    points: tuple[BacnetPoint, ...]
    targets: tuple[Target, ...]
    requests: tuple[ReadRequest, ...]
    max_objects: int
    # object -> indices of the points a COV notification of that object feeds
    cov_feeds: dict[ObjectKey, tuple[int, ...]] = field(default_factory=dict)

    @property
    def cov_objects(self) -> list[ObjectIdentifier]:
        first = {t.object_key: t.object_id for t in reversed(self.targets)}
        return [first[k] for k in self.cov_feeds]

    def subset(self, indices: Iterable[int]) -> tuple[ReadRequest, ...]:
        """Requests reading only the given points (those COV does not feed, for instance)."""
        wanted = set(indices)
        return _requests([t for t in self.targets if t.index in wanted], self.max_objects)


def target_of(index: int, point: BacnetPoint) -> Target:
    return Target(
        index=index,
        object_id=ObjectIdentifier((point.object_type, point.instance)),
        property_id=PropertyIdentifier(int(point.property) if point.property.isdigit() else point.property),
        array_index=point.index,
        kind=point.kind,
        states=point.states,
        with_status=point.status_flags and point.is_present_value and point.object_type in COV_TYPES,
    )


def plan_reads(points: Sequence[BacnetPoint], *, max_objects: int = 16) -> BacnetPlan:
    """Compile points into requests of at most `max_objects` objects each. Raises ValueError on bad limits."""
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, not {max_objects}")
    targets = tuple(target_of(i, p) for i, p in enumerate(points))
    feeds: dict[ObjectKey, list[int]] = {}
    for target in targets:
        if target.cov_fed:
            feeds.setdefault(target.object_key, []).append(target.index)
    return BacnetPlan(
        points=tuple(points),
        targets=targets,
        requests=_requests(targets, max_objects),
        max_objects=max_objects,
        cov_feeds={k: tuple(v) for k, v in feeds.items()},
    )


def _requests(targets: Sequence[Target], max_objects: int) -> tuple[ReadRequest, ...]:
    by_object: dict[
        ObjectKey, tuple[ObjectIdentifier, list[tuple[PropertyIdentifier, int | None]], list[int]]
    ] = {}
    for t in targets:
        _, props, members = by_object.setdefault(t.object_key, (t.object_id, [], []))
        wanted = [(t.property_id, t.array_index)] + ([(STATUS_FLAGS, None)] if t.with_status else [])
        props.extend(p for p in wanted if p not in props)
        members.append(t.index)
    objects = list(by_object.values())
    out = []
    for start in range(0, len(objects), max_objects):
        chunk = objects[start : start + max_objects]
        out.append(
            ReadRequest(
                objects=tuple(ObjectRead(oid, tuple(props)) for oid, props, _ in chunk),
                targets=tuple(i for _, _, members in chunk for i in members),
            )
        )
    return tuple(out)
