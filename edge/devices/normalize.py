"""Turns a driver's raw values into normalized samples: scaling, SunSpec scale factors, units, quality.

This is the only place values are scaled, for every protocol. A `DeviceNormalizer` is compiled once per device
from its point map. `normalize()` runs on every poll over the whole plan; `normalize_changes()` serves drivers
that push changes (COV, OPC UA subscriptions) and recomputes only the points a change affects. `report()` is
report by exception (`report_deadband`, `report_deadband_percent`, `max_silence` of a point): it keeps only the
samples worth publishing, so a poll in which nothing moved becomes no event at all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from edge.sdk.drivers import RawValue
from edge.sdk.errors import WriteRejected
from edge.sdk.points import PointConfig, PointFault, Qualified, Quality, Scalar

_GOOD = Quality.GOOD.value
_BAD = Quality.BAD.value

# (name, index, unit, scale, offset, scale-factor index or -1, decimals to round to or -1)
_Entry = tuple[str, int, str | None, float, float, int, int]


class _Exception(NamedTuple):
    """A point's report-by-exception rule; a deadband of None is not applied."""

    deadband: float | None
    percent: float | None
    max_silence: float


def _rule(point: PointConfig) -> _Exception | None:
    if point.report_deadband is None and point.report_deadband_percent is None and point.max_silence is None:
        return None
    return _Exception(point.report_deadband, point.report_deadband_percent, point.max_silence or math.inf)


def _within(rule: _Exception, value: Any, last: Any) -> bool:
    """True when `value` is still within the rule's deadbands around `last` (the value last published)."""
    if value == last:
        return True
    numeric = (int, float)
    if (
        type(value) is bool
        or type(last) is bool
        or not isinstance(value, numeric)
        or not isinstance(last, numeric)
    ):
        return False  # text, bits, a value after none: any change counts
    moved = abs(value - last)
    if rule.deadband is not None and moved <= rule.deadband:
        return True
    return rule.percent is not None and moved <= abs(last) * rule.percent / 100.0


def _decimals(number: float) -> int:
    exponent = Decimal(repr(number)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


class DeviceNormalizer:
    def __init__(self, device: str, points: Sequence[PointConfig]) -> None:
        self.device = device
        self.points = tuple(points)
        index = {p.name: i for i, p in enumerate(points)}
        self._plan: tuple[_Entry, ...] = tuple(
            (
                p.name,
                i,
                p.unit,
                p.scale,
                p.offset,
                index[p.scale_factor] if p.scale_factor else -1,
                max(_decimals(p.scale), _decimals(p.offset)) if (p.scale != 1.0 or p.offset != 0.0) else -1,
            )
            for i, p in enumerate(points)
            if p.publish
        )
        # For pushed changes: which published entries a change of raw index i affects (itself, its dependents).
        self._affected: dict[int, list[_Entry]] = {}
        for entry in self._plan:
            self._affected.setdefault(entry[1], []).append(entry)
            if entry[5] >= 0:
                self._affected.setdefault(entry[5], []).append(entry)
        self._by_name = {p.name: p for p in points}
        self._current: list[RawValue] = [None] * len(points)
        self._rules = {p.name: rule for p in points if p.publish and (rule := _rule(p)) is not None}
        self._reported: dict[
            str, tuple[Any, Any, float]
        ] = {}  # name -> (value, quality, when) last published
        # Semantic tags ride in every sample of a tagged point; untagged devices pay nothing.
        self._tags = tuple((p.name, p.tags) for p in points if p.publish and p.tags)

    def report(
        self, points: dict[str, dict[str, Any]], now: float | None = None
    ) -> dict[str, dict[str, Any]]:
        """The samples to publish: all of them, except those of report-by-exception points whose quality is the
        same and whose value stayed within the deadbands since they were last published, `max_silence` not yet
        passed. `now`: a monotonic time (seconds)."""
        rules = self._rules
        if not rules:
            return points
        when = time.monotonic() if now is None else now
        reported = self._reported
        out: dict[str, dict[str, Any]] = {}
        for name, sample in points.items():
            rule = rules.get(name)
            if rule is not None:
                value, quality = sample["value"], sample["quality"]
                last = reported.get(name)
                if (
                    last is not None
                    and quality == last[1]
                    and when - last[2] < rule.max_silence
                    and _within(rule, value, last[0])
                ):
                    continue
                reported[name] = (value, quality, when)
            out[name] = sample
        return out

    def normalize(self, raw: Sequence[RawValue]) -> dict[str, dict[str, Any]]:
        """Every published point of a full read, in plan order."""
        self._current = list(raw)
        out: dict[str, dict[str, Any]] = {}
        for entry in self._plan:
            name, i, unit, scale, offset, sf_index, decimals = entry
            value = raw[i]
            kind = type(value)
            if (kind is int or kind is float) and sf_index < 0:  # the common case, kept inline
                if decimals < 0:
                    out[name] = {"value": value, "unit": unit, "quality": _GOOD}
                else:
                    scaled = value * scale + offset  # type: ignore[operator]
                    out[name] = {
                        "value": round(scaled, decimals),
                        "unit": unit,
                        "quality": _GOOD,
                        "raw": value,
                    }
            else:
                out[name] = _sample(entry, value, raw)
        if self._tags:
            self._tag(out)
        return out

    def _tag(self, out: dict[str, dict[str, Any]]) -> None:
        for name, tags in self._tags:
            sample = out.get(name)
            if sample is not None:
                sample.update(tags)

    def normalize_changes(self, changes: Mapping[int, RawValue]) -> dict[str, dict[str, Any]]:
        """Apply pushed changes ({plan index: raw value}); returns only the published points they affect."""
        current = self._current
        for i, value in changes.items():
            current[i] = value
        out: dict[str, dict[str, Any]] = {}
        for i in changes:
            for entry in self._affected.get(i, ()):
                out[entry[0]] = _sample(entry, current[entry[1]], current)
        if self._tags:
            self._tag(out)
        return out

    def to_raw(self, point_name: str, value: Scalar) -> Scalar:
        """The raw value to write so that the point reads `value` (the inverse of `normalize`)."""
        point = self._by_name[point_name]
        if isinstance(value, bool | str):
            return value
        raw = (float(value) - point.offset) / point.scale
        if point.scale_factor:
            index = next(i for i, p in enumerate(self.points) if p.name == point.scale_factor)
            sf = self._current[index]
            if type(sf) is not int:
                raise WriteRejected(self.device, "scale factor not read yet", point=point_name)
            raw = raw / 10.0**sf
        rounded = round(raw)
        return rounded if abs(raw - rounded) < 1e-6 else raw

    def to_value(self, point_name: str, raw: float) -> float | None:
        """The engineering value a raw number reads as (`normalize`'s scaling, unrounded); None while the
        point's scale factor is not read yet. Gives a data type's raw range in the point's units."""
        point = self._by_name[point_name]
        value = raw * point.scale + point.offset
        if point.scale_factor:
            sf = self._current[next(i for i, p in enumerate(self.points) if p.name == point.scale_factor)]
            if type(sf) is not int:
                return None
            try:
                value *= 10.0**sf
            except OverflowError:  # a garbage scale factor (SunSpec's 0x8000 "not implemented")
                return None
        return value


def _sample(entry: _Entry, value: RawValue | Qualified, raw: Sequence[RawValue]) -> dict[str, Any]:
    """One point's sample, covering every case: faults, qualified values, bits and text, scale factors."""
    _, _, unit, scale, offset, sf_index, decimals = entry
    quality, reason = _GOOD, None
    if type(value) is Qualified:
        quality, reason, value = value.quality.value, value.reason, value.value
    if value is None or type(value) is PointFault:
        why = value.reason if type(value) is PointFault else (reason or "no value")
        return {"value": None, "unit": unit, "quality": _BAD, "reason": why}
    sample: dict[str, Any] = {"value": value, "unit": unit, "quality": quality}
    if type(value) is not bool and type(value) is not str and (sf_index >= 0 or decimals >= 0):
        scaled: float = value * scale + offset  # type: ignore[operator]
        if sf_index >= 0:
            sf = raw[sf_index]
            if type(sf) is not int:
                return {
                    "value": None,
                    "unit": unit,
                    "quality": _BAD,
                    "raw": value,
                    "reason": "scale factor unavailable",
                }
            scaled *= 10.0**sf
            decimals = max(decimals, -sf)
        sample["value"] = round(scaled, max(decimals, 0))
        sample["raw"] = value
    if reason is not None:
        sample["reason"] = reason
    return sample
