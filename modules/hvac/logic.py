"""Pure HVAC logic: zones off setpoint, short cycling, schedules. No I/O; tracks are stored as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from modules.hvac.config import ALL_DAYS, ScheduleEntry


@dataclass
class ZoneTrack:
    temperature: float | None = None
    setpoint: float | None = None
    off_since: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CycleTrack:
    running: bool | None = None
    starts: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def zone_observe(
    track: ZoneTrack, temperature: float | None, setpoint: float | None, at: float, tolerance: float
) -> None:
    if temperature is not None:
        track.temperature = temperature
    if setpoint is not None:
        track.setpoint = setpoint
    if track.temperature is None or track.setpoint is None:
        return
    off = abs(track.temperature - track.setpoint) > tolerance
    if off and track.off_since is None:
        track.off_since = at
    elif not off:
        track.off_since = None


def zone_off_for(track: ZoneTrack, now: float) -> float | None:
    """Seconds the zone has been off setpoint, or None when it is on setpoint (or unknown)."""
    return None if track.off_since is None else max(0.0, now - track.off_since)


def cycle_observe(track: CycleTrack, running: bool, at: float, window: float) -> None:
    """Record the run status; a stopped-to-running change is a start."""
    if running and track.running is False:
        track.starts.append(at)
    track.running = running
    prune(track, at, window)


def prune(track: CycleTrack, now: float, window: float) -> int:
    """Forget starts older than the window; returns the starts within it."""
    track.starts = [t for t in track.starts if now - t <= window]
    return len(track.starts)


def scheduled(entries: tuple[ScheduleEntry, ...], local: datetime) -> tuple[str, float | None] | None:
    """The entry in force at local time `local` (the latest one that started within the past week), as
    (a key naming this occurrence, value); None when no entry applies."""
    best: tuple[datetime, ScheduleEntry] | None = None
    for days_back in range(8):
        day = local - timedelta(days=days_back)
        weekday = ALL_DAYS[day.weekday()]
        for entry in entries:
            if weekday not in entry.days:
                continue
            hour, minute = (int(x) for x in entry.at.split(":"))
            start = day.replace(hour=hour, minute=minute, second=0, microsecond=0)
            if start <= local and (best is None or start > best[0]):
                best = (start, entry)
        if best is not None:
            break
    if best is None:
        return None
    return best[0].strftime("%Y-%m-%dT%H:%M"), best[1].value
