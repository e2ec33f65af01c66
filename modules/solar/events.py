"""What the solar module publishes: energy per inverter and interval, and inverter alerts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edge.sdk import AssetFailedData

__all__ = ["ENERGY_PRODUCED", "AssetFailedData", "EnergyProducedData"]

ENERGY_PRODUCED = "org.edgegw.energy.produced"


class EnergyProducedData(BaseModel):
    """Energy one inverter produced in one interval. Identified by (site, device, start): a consumer that
    receives the same interval twice (a restart between publishing and remembering) must not count it twice."""

    model_config = ConfigDict(extra="forbid")
    site: str
    device: str
    start: str = Field(description="Interval start, RFC 3339 (aligned to the interval length).")
    end: str
    interval_s: float
    energy_wh: float = Field(ge=0, description="Energy in the interval, recovered_wh included.")
    recovered_wh: float = Field(
        ge=0, description="Energy of earlier intervals learned only now (from the counter, after a gap)."
    )
    coverage: float = Field(ge=0, le=1, description="Share of the interval covered by trustworthy data.")
    methods: list[str] = Field(
        description="'power' (AC power integrated) and/or 'counter' (lifetime energy)."
    )
    gaps: int = Field(ge=0, description="Gaps whose energy is unknown (no trustworthy counter across them).")
    counter_resets: int = Field(ge=0, description="Times the lifetime counter went backwards.")
