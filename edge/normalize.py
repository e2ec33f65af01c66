"""Turns a driver's raw values into normalized samples: scaling, SunSpec scale factors, units, quality.

This is the only place values are scaled, for every protocol. A `DeviceNormalizer` is compiled once per device
from its point map; `normalize()` runs on every poll and stays a tight loop over precomputed tuples.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from edge.drivers import RawValue
from edge.errors import WriteRejected
from edge.points import PointConfig, PointFault, Quality, Scalar

_GOOD = Quality.GOOD.value
_BAD = Quality.BAD.value


def _decimals(number: float) -> int:
    exponent = Decimal(repr(number)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


class DeviceNormalizer:
    def __init__(self, device: str, points: Sequence[PointConfig]) -> None:
        self.device = device
        self.points = tuple(points)
        index = {p.name: i for i, p in enumerate(points)}
        # (name, index, unit, scale, offset, scale-factor index or -1, decimals to round to or -1)
        self._plan: tuple[tuple[str, int, str | None, float, float, int, int], ...] = tuple(
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
        self._by_name = {p.name: p for p in points}
        self._last_raw: Sequence[RawValue] = ()

    def normalize(self, raw: Sequence[RawValue]) -> dict[str, dict[str, Any]]:
        self._last_raw = raw
        out: dict[str, dict[str, Any]] = {}
        for name, i, unit, scale, offset, sf_index, decimals in self._plan:
            value = raw[i]
            if value is None or type(value) is PointFault:
                reason = value.reason if value is not None else "no value"  # type: ignore[union-attr]
                out[name] = {"value": None, "unit": unit, "quality": _BAD, "reason": reason}
                continue
            if sf_index < 0 and decimals < 0:
                out[name] = {"value": value, "unit": unit, "quality": _GOOD}
                continue
            if type(value) is bool or type(value) is str:
                out[name] = {"value": value, "unit": unit, "quality": _GOOD}
                continue
            scaled: float = value * scale + offset  # type: ignore[operator]
            if sf_index >= 0:
                sf = raw[sf_index]
                if type(sf) is not int:
                    out[name] = {
                        "value": None,
                        "unit": unit,
                        "quality": _BAD,
                        "raw": value,
                        "reason": "scale factor unavailable",
                    }
                    continue
                scaled = scaled * 10.0**sf
                decimals = max(decimals, -sf)
            out[name] = {"value": round(scaled, decimals), "unit": unit, "quality": _GOOD, "raw": value}
        return out

    def to_raw(self, point_name: str, value: Scalar) -> Scalar:
        """The raw value to write so that the point reads `value` (the inverse of `normalize`)."""
        point = self._by_name[point_name]
        if isinstance(value, bool | str):
            return value
        raw = (float(value) - point.offset) / point.scale
        if point.scale_factor:
            index = next(i for i, p in enumerate(self.points) if p.name == point.scale_factor)
            sf = self._last_raw[index] if len(self._last_raw) > index else None
            if type(sf) is not int:
                raise WriteRejected(self.device, "scale factor not read yet", point=point_name)
            raw = raw / 10.0**sf
        rounded = round(raw)
        return rounded if abs(raw - rounded) < 1e-6 else raw
