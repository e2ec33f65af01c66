"""What the billing module reads: the data of `org.edgegw.energy.produced` it relies on (tolerant of
fields it does not use, so a newer minor version of the solar module's events still bills)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

ENERGY_PRODUCED = "org.edgegw.energy.produced"


class EnergyInterval(BaseModel):
    model_config = ConfigDict(extra="ignore")
    site: str = Field(min_length=1)
    device: str = Field(min_length=1)
    start: datetime
    end: datetime
    energy_wh: float = Field(ge=0)
