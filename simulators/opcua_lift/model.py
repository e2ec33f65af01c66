"""The lifts' physics, independent of OPC UA: trips between floors, doors, load, counters and faults."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

FAULT_NONE, FAULT_STUCK, FAULT_DOOR = 0, 31, 42
FLOOR_HEIGHT_M = 3.0
RATED_LOAD_KG = 1000.0
PERSON_KG = 75.0
AMBIENT_C = 22.0


@dataclass(frozen=True, slots=True)
class LiftState:
    """What the simulator last published for one lift (engineering values, as the variables hold them)."""

    lift: int
    current_floor: int
    direction: str
    door_open: bool
    car_load: float
    trip_counter: int
    run_hours: float
    position: float
    speed: float
    motor_temperature: float
    fault_code: int
    in_service: bool
    target_floor: int
    phase: str


@dataclass(frozen=True, slots=True)
class Timing:
    speed: float  # m/s
    door: float  # s for the doors to open, and again to close
    dwell: float  # s doors stay open
    idle: tuple[float, float]  # s between automatic trips
    auto: bool


class Lift:
    """One car's physical model. Phases: idle, moving, opening, open, closing, stuck, door_fault."""

    def __init__(self, number: int, floors: int, rng: random.Random, timing: Timing) -> None:
        self.number = number
        self.floors = floors
        self.rng = rng
        self.t = timing
        self.floor = 0
        self.position = 0.0
        self.target = 0
        self.pending: int | None = None
        self.direction = "idle"
        self.speed = 0.0
        self.door_open = False
        self.load = 0.0
        self.trips = 0
        self.run_hours = 0.0
        self.temperature = AMBIENT_C
        self.fault = FAULT_NONE
        self.in_service = True
        self.phase = "idle"
        self.timer = rng.uniform(*timing.idle) if timing.auto else 0.0

    def command(self, floor: int) -> None:
        """A trip request (TargetFloor written): served now when idle, else after the current cycle."""
        self.target = floor
        if self.phase == "idle":
            self._start(floor)
        else:
            self.pending = floor

    def _start(self, floor: int) -> None:
        self.pending = None
        self.target = floor
        if floor == self.floor and abs(self.position - floor * FLOOR_HEIGHT_M) < 1e-6:
            self.phase, self.timer, self.door_open = "opening", self.t.door, True
        else:
            self.phase = "moving"
            self.direction = "up" if floor * FLOOR_HEIGHT_M > self.position else "down"
            self.speed = self.t.speed

    def step(self, dt: float) -> None:
        heat = 1.0 if self.phase == "moving" else 0.0
        self.temperature += (AMBIENT_C + 35.0 * heat - self.temperature) * min(1.0, dt / 120.0)
        if self.phase == "moving":
            self._move(dt)
        elif self.phase in ("opening", "open", "closing"):
            self._doors(dt)
        elif self.phase == "idle":
            if self.pending is not None and self.in_service and self.fault == FAULT_NONE:
                self._start(self.pending)
            elif self.t.auto and self.in_service and self.fault == FAULT_NONE:
                self.timer -= dt
                if self.timer <= 0:
                    choices = [f for f in range(self.floors) if f != self.floor]
                    if choices:
                        self._start(self.rng.choice(choices))

    def _move(self, dt: float) -> None:
        goal = self.target * FLOOR_HEIGHT_M
        step = self.t.speed * dt
        self.run_hours += dt / 3600.0
        if abs(goal - self.position) <= step:
            self.position = goal
            self.floor = self.target
            self.speed, self.direction = 0.0, "idle"
            self.trips += 1
            self.phase, self.timer, self.door_open = "opening", self.t.door, True
        else:
            self.position += step if goal > self.position else -step
            self.floor = round(self.position / FLOOR_HEIGHT_M)

    def _doors(self, dt: float) -> None:
        self.timer -= dt
        if self.timer > 0:
            return
        if self.phase == "opening":
            # people get out and in: the load changes by whole persons
            persons = round(self.load / PERSON_KG)
            persons = max(0, min(int(RATED_LOAD_KG // PERSON_KG), persons + self.rng.randint(-3, 3)))
            self.load = round(persons * PERSON_KG + self.rng.uniform(-20.0, 20.0) * (persons > 0), 1)
            self.phase, self.timer = "open", self.t.dwell
        elif self.phase == "open":
            self.phase, self.timer = "closing", self.t.door
        else:
            self.door_open = False
            self.phase = "idle"
            self.timer = self.rng.uniform(*self.t.idle)

    def stick(self) -> None:
        level = abs(self.position / FLOOR_HEIGHT_M - round(self.position / FLOOR_HEIGHT_M)) < 1e-6
        if self.phase != "moving" or level:  # a stuck car is between two floors: leave this one first
            up = (self.direction != "down" or self.floor == 0) and self.floor + 1 < self.floors
            self.position = (round(self.position / FLOOR_HEIGHT_M) + (0.5 if up else -0.5)) * FLOOR_HEIGHT_M
            self.floor = round(self.position / FLOOR_HEIGHT_M)
        self.phase, self.speed, self.direction = "stuck", 0.0, "idle"
        self.door_open = False
        self.fault, self.in_service = FAULT_STUCK, False

    def jam_door(self) -> None:
        if self.phase == "moving":  # doors never open between floors: level first
            self.position = self.floor * FLOOR_HEIGHT_M
        self.phase, self.speed, self.direction = "door_fault", 0.0, "idle"
        self.door_open = True
        self.fault, self.in_service = FAULT_DOOR, False

    def fail(self, code: int) -> None:
        """Any other controller fault (drive, overload, safety chain): the car stops where it can, level if
        it was moving (it creeps to the nearest floor first), doors closed, out of service."""
        if self.phase == "moving":
            self.position = self.floor * FLOOR_HEIGHT_M
        self.phase, self.speed, self.direction = "idle", 0.0, "idle"
        self.door_open = False
        self.fault, self.in_service = code, False

    def clear(self) -> None:
        """Technician reset: re-level to the nearest floor, close the doors, back in service."""
        self.floor = max(0, min(self.floors - 1, round(self.position / FLOOR_HEIGHT_M)))
        self.position = self.floor * FLOOR_HEIGHT_M
        self.target = self.floor
        self.phase, self.speed, self.direction = "idle", 0.0, "idle"
        self.door_open = False
        self.fault, self.in_service = FAULT_NONE, True
        self.timer = self.rng.uniform(*self.t.idle)

    def values(self) -> dict[str, Any]:
        return {
            "CurrentFloor": self.floor,
            "Direction": self.direction,
            "DoorOpen": self.door_open,
            "CarLoad": round(self.load, 1),
            "TripCounter": self.trips,
            "RunHours": round(self.run_hours, 6),
            "Position": round(self.position, 2),
            "Speed": round(self.speed, 2),
            "MotorTemperature": round(self.temperature, 1),
            "FaultCode": self.fault,
            "InService": self.in_service,
            "TargetFloor": self.target,
        }
