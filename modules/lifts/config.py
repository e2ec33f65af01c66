"""The lifts module's configuration: which devices are lifts, their point names, and the fault limits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.sdk import Name

Severity = Literal["critical", "major", "minor", "warning"]


class LiftPoints(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    position: Name = "position"
    speed: Name = "speed"
    door_open: Name = "door_open"
    fault_code: Name = "fault_code"
    trip_counter: Name = "trip_counter"
    current_floor: Name = "current_floor"


class LiftsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: str = Field(default="lift-*", description="Glob on device names of the lifts.")
    points: LiftPoints = LiftPoints()
    floor_height_m: float = Field(default=3.0, gt=0.0)
    level_tolerance_m: float = Field(
        default=0.6,
        gt=0.0,
        description="Farther than this from a floor is between floors (mind the deadband).",
    )
    stuck_after: float = Field(
        default=30.0, ge=0.0, description="Seconds still between floors before 'stuck'."
    )
    door_open_max: float = Field(default=60.0, ge=0.0, description="Seconds a door may stay open when still.")
    fault_codes: dict[str, str] = Field(
        default_factory=lambda: {"31": "stuck between floors", "42": "door fault"},
        description="Controller fault codes and their meaning (any other non-zero code is a fault too).",
    )
    fault_severity: Severity = "major"
    check_interval: float = Field(default=1.0, gt=0.0, le=60.0)
    report_interval: float = Field(default=3600.0, ge=1.0, description="Seconds per usage report.")

    @field_validator("fault_codes")
    @classmethod
    def _integer_codes(cls, codes: dict[str, str]) -> dict[str, str]:
        for code in codes:
            if not code.lstrip("-").isdigit():
                raise ValueError(f"fault code {code!r} is not an integer")
        return codes
