"""Pure lift logic: samples in, counters and fault conditions out. No I/O; `LiftTrack` is stored as JSON.

Lift controllers push only what changed, so the track merges each event into the last known state.
- trips: increases of the controller's trip counter (a counter that goes backwards is a reset: counted, and
  its new value becomes the base); door cycles: each closed-to-open transition of the door.
- stuck: the car is still (speed about 0) and farther than `level_tolerance_m` from any floor for
  `stuck_after` seconds;
- door: the door is open while the car is still for longer than `door_open_max` seconds;
- fault_code: the controller reports a non-zero fault code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from modules.lifts.config import LiftsConfig

MOVING_SPEED = 0.05  # m/s: slower than this is standing still


@dataclass
class LiftTrack:
    position: float | None = None
    speed: float | None = None
    door_open: bool | None = None
    fault_code: int | None = None
    trip_counter: int | None = None
    floor: int | None = None
    last_time: float | None = None
    between_since: float | None = None
    door_since: float | None = None
    fault_since: float | None = None
    trips: int = 0
    door_cycles: int = 0
    counter_resets: int = 0
    period_start: float | None = None
    period_trips: int = 0
    period_door_cycles: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LiftTrack:
        return cls(**raw)


@dataclass(frozen=True, slots=True)
class Condition:
    kind: str
    holds: bool
    since: float
    cause: str
    severity: str


def observe(track: LiftTrack, values: dict[str, Any], at: float, config: LiftsConfig) -> None:
    """Merge one event's good values (by the config's point roles) into the track."""
    p = config.points
    if p.trip_counter in values:
        counter = int(values[p.trip_counter])
        if track.trip_counter is not None:
            if counter >= track.trip_counter:
                track.trips += counter - track.trip_counter
                track.period_trips += counter - track.trip_counter
            else:
                track.counter_resets += 1
        track.trip_counter = counter
    if p.door_open in values:
        door = bool(values[p.door_open])
        if door and track.door_open is False:
            track.door_cycles += 1
            track.period_door_cycles += 1
        if door and not track.door_open:
            track.door_since = at
        track.door_open = door
    if p.position in values:
        track.position = float(values[p.position])
    if p.speed in values:
        track.speed = float(values[p.speed])
    if p.current_floor in values:
        track.floor = int(values[p.current_floor])
    if p.fault_code in values:
        code = int(values[p.fault_code])
        if code and not track.fault_code:
            track.fault_since = at
        track.fault_code = code
    track.last_time = at if track.last_time is None else max(track.last_time, at)
    between = _still(track) and _between_floors(track, config)
    if between and track.between_since is None:
        track.between_since = at
    elif not between:
        track.between_since = None


def conditions(track: LiftTrack, now: float, config: LiftsConfig) -> list[Condition]:
    """Each watched fault of the lift at `now`: whether it holds, since when, and why."""
    out = []
    since = track.between_since
    stuck = since is not None and now - since >= config.stuck_after
    where = f"{track.position:.2f} m" if track.position is not None else "unknown height"
    out.append(
        Condition(
            "stuck",
            stuck,
            since or now,
            f"car still between floors at {where} for {now - (since or now):.0f} s"
            if stuck
            else "car level or moving",
            "critical",
        )
    )
    door_since = track.door_since if track.door_open and _still(track) else None
    door = door_since is not None and now - door_since >= config.door_open_max
    floor = f" at floor {track.floor}" if track.floor is not None else ""
    out.append(
        Condition(
            "door",
            door,
            door_since or now,
            f"door open for {now - (door_since or now):.0f} s{floor}, failed to close"
            if door
            else "door closed",
            "major",
        )
    )
    code = track.fault_code or 0
    meaning = config.fault_codes.get(str(code), "unknown fault")
    out.append(
        Condition(
            "fault_code",
            code != 0,
            track.fault_since or now,
            f"fault code {code} ({meaning})" if code else "fault code cleared (0)",
            config.fault_severity,
        )
    )
    return out


def _still(track: LiftTrack) -> bool:
    return track.speed is None or abs(track.speed) < MOVING_SPEED


def _between_floors(track: LiftTrack, config: LiftsConfig) -> bool:
    if track.position is None:
        return False
    height = config.floor_height_m
    offset = abs(track.position - round(track.position / height) * height)
    return offset > config.level_tolerance_m
