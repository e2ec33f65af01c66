"""The solar module's configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.sdk import Name


class Underperformance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="Flag below this share of the peers' median."
    )
    min_peers: int = Field(default=2, ge=1, description="Peers at the same site needed to compare.")
    min_power_w: float = Field(
        default=500.0, ge=0.0, description="Compare only while the peers produce this."
    )
    after: float = Field(default=300.0, ge=0.0, description="Seconds below before the inverter is flagged.")
    capacities: dict[str, float] = Field(
        default_factory=dict,
        description="Rated power (W) by device, to compare inverters of different sizes.",
    )


class SolarConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: float = Field(default=300.0, ge=1.0, le=86_400.0, description="Seconds per energy interval.")
    max_gap: float = Field(default=120.0, gt=0.0, description="Longer gaps are bridged by the counter only.")
    source: Literal["auto", "power", "counter"] = "auto"
    power_point: Name = "ac_power"
    energy_point: Name | None = "lifetime_energy"
    devices: str = Field(default="*", description="Glob on device names of the inverters.")
    max_power_w: float = Field(
        default=1_000_000.0, gt=0.0, description="Counter steps beyond this are implausible."
    )
    offline_after: float = Field(
        default=60.0, ge=0.0, description="Seconds without good power before 'offline'."
    )
    check_interval: float = Field(
        default=1.0,
        gt=0.0,
        le=60.0,
        description="Seconds between time checks (offline: a down device sends one bad poll, then nothing).",
    )
    underperformance: Underperformance = Underperformance()
