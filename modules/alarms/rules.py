"""Pure alarm logic: one point of one device under one rule, evaluated on each sample and each time tick.

No I/O: `Track` holds what the module remembers (last value, quality, when it last changed, pending and
active conditions) and is stored as JSON; `evaluate` returns the transitions to publish.

- high/low: the condition holds while the last good value is beyond the limit; it must hold for `delay`
  seconds before the alarm is raised, and the alarm clears only once the value is back inside the limit by
  `hysteresis` (so a value hovering at the limit does not flap). A bad sample neither raises nor clears.
- stale: no sample for `stale_after` seconds; cleared by the next sample.
- bad_quality: the point's quality has not been good for `bad_quality_after` seconds; cleared by a good one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modules.alarms.config import Rule


@dataclass
class Track:
    value: Any = None  # last good value
    quality: str = "good"
    updated: float | None = None  # time of the last sample, good or bad
    bad_since: float | None = None
    pending: dict[str, float] = field(default_factory=dict)  # condition -> since when it holds
    active: dict[str, float] = field(default_factory=dict)  # condition -> since when it was raised

    def to_json(self) -> dict[str, Any]:
        # copies of the two dicts, the rest is scalars: asdict deep-copies every value, per sample
        return {**vars(self), "pending": dict(self.pending), "active": dict(self.active)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Track:
        return cls(**raw)


@dataclass(frozen=True, slots=True)
class Transition:
    condition: str
    state: str  # "raised" | "cleared"
    at: float
    value: Any
    limit: float | None


def observe(track: Track, value: Any, quality: str, at: float) -> None:
    """Record one sample of the point (sample time `at`); older samples than the last are ignored."""
    if track.updated is not None and at < track.updated:
        return
    track.updated = at
    good = quality == "good" and value is not None
    track.quality = "good" if good else quality
    if good:
        track.value = value
        track.bad_since = None
    elif track.bad_since is None:
        track.bad_since = at


def evaluate(rule: Rule, track: Track, now: float) -> list[Transition]:
    """Raise or clear each of the rule's conditions for the track's state at `now`."""
    out: list[Transition] = []
    numeric = isinstance(track.value, int | float) and not isinstance(track.value, bool)
    value = float(track.value) if numeric else None
    good = track.quality == "good"
    if rule.high is not None:
        holds = good and value is not None and value > rule.high
        released = good and value is not None and value < rule.high - rule.hysteresis
        _limit(out, track, "high", holds, released, rule.delay, now, rule.high)
    if rule.low is not None:
        holds = good and value is not None and value < rule.low
        released = good and value is not None and value > rule.low + rule.hysteresis
        _limit(out, track, "low", holds, released, rule.delay, now, rule.low)
    if rule.stale_after is not None and track.updated is not None:
        stale = now - track.updated >= rule.stale_after
        _timed(out, track, "stale", stale, track.updated + rule.stale_after, now, rule.stale_after)
    if rule.bad_quality_after is not None:
        bad = track.bad_since is not None and now - track.bad_since >= rule.bad_quality_after
        since = (track.bad_since or now) + rule.bad_quality_after
        _timed(out, track, "bad_quality", bad, since, now, rule.bad_quality_after)
    return out


def _limit(
    out: list[Transition],
    track: Track,
    condition: str,
    holds: bool,
    released: bool,
    delay: float,
    now: float,
    limit: float,
) -> None:
    if condition in track.active:
        if released:
            del track.active[condition]
            out.append(Transition(condition, "cleared", now, track.value, limit))
        return
    if not holds:
        track.pending.pop(condition, None)
        return
    since = track.pending.setdefault(condition, min(now, track.updated or now))
    if now - since >= delay:
        del track.pending[condition]
        track.active[condition] = since
        out.append(Transition(condition, "raised", now, track.value, limit))


def _timed(
    out: list[Transition], track: Track, condition: str, holds: bool, since: float, now: float, limit: float
) -> None:
    if holds and condition not in track.active:
        track.active[condition] = since
        out.append(Transition(condition, "raised", now, track.value, limit))
    elif not holds and condition in track.active:
        del track.active[condition]
        out.append(Transition(condition, "cleared", now, track.value, limit))
