"""The HVAC module's configuration: zone and equipment point names, limits, and optional schedules."""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.sdk import Name

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ScheduleEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: str = Field(description="Local time 'HH:MM' from which the value applies.")
    value: float | None = Field(description="The setpoint; null releases the point (BACnet relinquish).")
    days: tuple[Day, ...] = ALL_DAYS

    @field_validator("at")
    @classmethod
    def _hh_mm(cls, at: str) -> str:
        match = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", at)
        if match is None:
            raise ValueError(f"expected 'HH:MM' (00:00..23:59), got {at!r}")
        return at


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: Name
    site: Name
    device: Name
    point: Name = "zone-temp-setpoint"
    timezone: str = "UTC"
    entries: tuple[ScheduleEntry, ...] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r}") from None
        return zone


class HvacConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    zones: str = Field(default="*", description="Glob on device names that may be zones (VAV boxes, FCUs).")
    zone_temp_point: Name = "zone-temp"
    zone_setpoint_point: Name = "zone-temp-setpoint"
    tolerance_k: float = Field(default=1.5, gt=0.0, description="Off setpoint beyond this many kelvin.")
    off_setpoint_after: float = Field(
        default=900.0, ge=0.0, description="Seconds off setpoint before alerting."
    )
    cycling_points: tuple[Name, ...] = Field(
        default=("supply-fan-status", "compressor-status"),
        description="Run-status points of fans, compressors.",
    )
    max_starts: int = Field(
        default=6, ge=1, description="More starts than this within the window: short cycling."
    )
    cycling_window: float = Field(default=3600.0, gt=0.0)
    filter_points: tuple[Name, ...] = ("filter-alarm",)
    schedules: tuple[Schedule, ...] = ()
    check_interval: float = Field(default=5.0, gt=0.0, le=300.0)
