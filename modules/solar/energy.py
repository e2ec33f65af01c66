"""Pure energy accounting for one inverter: samples in, closed intervals out. No I/O, stored as JSON.

Between two good samples the energy is the trapezoid of AC power (W) over the time between them, split at
interval boundaries by interpolating the power. Where that cannot be trusted the lifetime energy counter (Wh)
is used instead:
- a gap longer than `max_gap` (the inverter was offline, the gateway was down): the counter's increase bridges
  it, if it is plausible (not negative, not more than `max_power_w` could have produced); otherwise the gap is
  counted and its energy is unknown (never guessed);
- `source = "counter"`: the counter is preferred wherever it is plausible (revenue-grade meters).
A counter that went backwards (replaced meter, reset inverter) is a reset: counted, and that step falls back to
the power integral. Energy that belongs to an interval already closed (learned late, after a gap) is added to
the open interval as `recovered_wh`, so nothing is lost and nothing is reported twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

Source = Literal["auto", "power", "counter"]


@dataclass(frozen=True, slots=True)
class Settings:
    interval: float = 300.0
    max_gap: float = 120.0
    source: Source = "auto"
    max_power_w: float = 1_000_000.0


@dataclass(frozen=True, slots=True)
class Interval:
    start: float
    end: float
    energy_wh: float
    recovered_wh: float
    covered_s: float
    methods: tuple[str, ...]
    gaps: int
    counter_resets: int


@dataclass
class Track:
    """What is remembered of one inverter between samples."""

    last_time: float | None = None
    last_power: float | None = None
    last_counter: float | None = None
    bucket_start: float | None = None
    wh: float = 0.0
    recovered_wh: float = 0.0
    covered_s: float = 0.0
    methods: list[str] = field(default_factory=list)
    gaps: int = 0
    counter_resets: int = 0
    bad_since: float | None = None  # the power point has not been good since then (offline detection)
    low_since: float | None = None  # producing far below the site's peers since then

    def to_json(self) -> dict[str, Any]:
        # a copy of the list, the rest is scalars: asdict deep-copies every value, per sample
        return {**vars(self), "methods": list(self.methods)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Track:
        return cls(**raw)


def add_sample(
    track: Track, at: float, power: float | None, counter: float | None, settings: Settings
) -> list[Interval]:
    """Account one good sample (power in W and/or counter in Wh); returns the intervals it closed."""
    if power is None and counter is None:
        return close_until(track, at, settings)
    if track.last_time is not None and at <= track.last_time:
        return []  # redelivered or out of order: already accounted
    if track.bucket_start is None:
        track.bucket_start = _floor(at, settings.interval)
    closed: list[Interval] = []
    if track.last_time is not None:
        for start, end, wh, method in _segment(track, at, power, counter, settings):
            closed += _add(track, start, end, wh, method, settings)
    closed += close_until(track, at, settings)
    track.last_time, track.last_power, track.last_counter = at, power, counter
    return closed


def close_until(track: Track, at: float, settings: Settings) -> list[Interval]:
    """Close every interval that ended at or before `at` (time moves on even while no energy is known)."""
    closed: list[Interval] = []
    if track.bucket_start is None:
        return closed
    while track.bucket_start + settings.interval <= at:
        if track.covered_s > 0 or track.wh > 0:
            closed.append(_close(track, settings))
        else:
            track.bucket_start = max(track.bucket_start + settings.interval, _floor(at, settings.interval))
    return closed


def _segment(
    track: Track, at: float, power: float | None, counter: float | None, settings: Settings
) -> list[tuple[float, float, float, str]]:
    """The energy between the last sample and this one, as pieces split at interval boundaries."""
    t0 = track.last_time
    assert t0 is not None
    dt = at - t0
    delta = None
    if counter is not None and track.last_counter is not None:
        delta = counter - track.last_counter
        if delta < 0:
            track.counter_resets += 1
            delta = None
    plausible = delta is not None and delta <= settings.max_power_w * dt / 3600.0 * 1.1 + 1.0
    have_power = power is not None and track.last_power is not None
    if dt <= settings.max_gap and have_power and not (settings.source == "counter" and plausible):
        p0, p1 = float(track.last_power or 0.0), float(power or 0.0)
        return [
            (a, b, _trapezoid(t0, p0, at, p1, a, b), "power") for a, b in _split(t0, at, settings.interval)
        ]
    if plausible and (dt <= settings.max_gap or settings.source != "power"):
        total = float(delta or 0.0)
        return [(a, b, total * (b - a) / dt, "counter") for a, b in _split(t0, at, settings.interval)]
    track.gaps += 1  # nothing trustworthy spans it: unknown, not guessed
    return []


def _add(
    track: Track, start: float, end: float, wh: float, method: str, settings: Settings
) -> list[Interval]:
    closed: list[Interval] = []
    assert track.bucket_start is not None
    if start < track.bucket_start:  # belongs to an interval already reported
        track.recovered_wh += wh
        track.wh += wh
    else:
        while start >= track.bucket_start + settings.interval:
            if track.covered_s > 0 or track.wh > 0:
                closed.append(_close(track, settings))
            else:
                track.bucket_start = _floor(start, settings.interval)
        track.wh += wh
        track.covered_s += end - start
    if method not in track.methods:
        track.methods.append(method)
    return closed


def _close(track: Track, settings: Settings) -> Interval:
    assert track.bucket_start is not None
    interval = Interval(
        start=track.bucket_start,
        end=track.bucket_start + settings.interval,
        energy_wh=round(track.wh, 3),
        recovered_wh=round(track.recovered_wh, 3),
        covered_s=round(min(track.covered_s, settings.interval), 3),
        methods=tuple(track.methods),
        gaps=track.gaps,
        counter_resets=track.counter_resets,
    )
    track.bucket_start += settings.interval
    track.wh = track.recovered_wh = track.covered_s = 0.0
    track.methods, track.gaps, track.counter_resets = [], 0, 0
    return interval


def _floor(at: float, interval: float) -> float:
    return math.floor(at / interval) * interval


def _split(t0: float, t1: float, interval: float) -> list[tuple[float, float]]:
    pieces = []
    a = t0
    while a < t1:
        b = min(t1, _floor(a, interval) + interval)
        pieces.append((a, b))
        a = b
    return pieces


def _trapezoid(t0: float, p0: float, t1: float, p1: float, a: float, b: float) -> float:
    """Wh between a and b of a power that moves linearly from p0 at t0 to p1 at t1."""

    def at(t: float) -> float:
        return p0 + (p1 - p0) * (t - t0) / (t1 - t0)

    return (at(a) + at(b)) / 2.0 * (b - a) / 3600.0


def peers_median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0
