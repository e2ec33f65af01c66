"""What the lifts module publishes: asset alerts and usage counts per lift."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edge.sdk import AssetFailedData

__all__ = ["LIFT_USAGE", "AssetFailedData", "LiftUsageData"]

LIFT_USAGE = "org.edgegw.lift.usage"


class LiftUsageData(BaseModel):
    """Trips and door cycles of one lift in one reporting period, and since monitoring began."""

    model_config = ConfigDict(extra="forbid")
    site: str
    device: str
    start: str = Field(description="Period start, RFC 3339.")
    end: str
    trips: int = Field(ge=0)
    door_cycles: int = Field(ge=0)
    total_trips: int = Field(ge=0)
    total_door_cycles: int = Field(ge=0)
    counter_resets: int = Field(ge=0, description="Times the controller's trip counter went backwards.")
