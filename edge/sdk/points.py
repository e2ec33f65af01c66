"""What the kernel knows about a point, whatever the protocol: its name, unit, scaling and quality."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "BrickClass",
    "HaystackTag",
    "Name",
    "PointConfig",
    "PointFault",
    "Qualified",
    "Quality",
    "Scalar",
    "ValueKind",
]

# Point, device, site and tenant names become MQTT topic levels: no '/', '+', '#' or spaces.
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]

Scalar = bool | int | float | str

# Semantic tags: a Brick class name (https://brickschema.org, e.g. Supply_Air_Temperature_Sensor) and Project
# Haystack marker tags (e.g. supply, air, temp, sensor), as their vocabularies spell them.
BrickClass = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Z][A-Za-z0-9_]*$")]
HaystackTag = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][A-Za-z0-9_]*$")]

# What a point's published values are: True/False, whole numbers, other numbers, or texts (enumerations too)
ValueKind = Literal["bool", "integer", "number", "text"]


class Quality(StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


@dataclass(frozen=True, slots=True)
class PointFault:
    """Stands in a driver's read result where a point could not be read; `reason` says why."""

    reason: str


@dataclass(frozen=True, slots=True)
class Qualified:
    """A value the device itself qualifies (OPC UA status, BACnet status flags): uncertain or bad, and why."""

    value: Scalar | None
    quality: Quality
    reason: str


class PointConfig(BaseModel):
    """Protocol-independent part of a point; each driver's point model extends it with addressing fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    scale_factor: Name | None = Field(
        default=None, description="Name of a point whose value v multiplies this one by 10**v (SunSpec)."
    )
    publish: bool = Field(default=True, description="False for helper points such as scale factors.")
    writable: bool = False
    description: str = ""
    # Report by exception (applied once, in the kernel's normalizer): with any of these three set, a sample is
    # published only when its quality changed, its value moved out of the deadbands around the value last
    # published, or `max_silence` passed since then. Unchanged values then cost neither storage nor bus.
    report_deadband: float | None = Field(
        default=None,
        ge=0.0,
        description="Report by exception: publish a numeric value only when it moved more than this (in the "
        "point's units) from the last published one; 0: on any change.",
    )
    report_deadband_percent: float | None = Field(
        default=None,
        ge=0.0,
        description="Report by exception: publish a numeric value only when it moved more than this percentage of "
        "the last published one (with report_deadband too, it must leave both bands).",
    )
    max_silence: float | None = Field(
        default=None,
        gt=0.0,
        description="Report by exception: publish the point at least every this many seconds, changed or not "
        "(heartbeat); alone, it means 'on any change, and at least this often'.",
    )
    brick: BrickClass | None = Field(
        default=None, description="Brick class, e.g. Zone_Air_Temperature_Sensor."
    )
    haystack: tuple[HaystackTag, ...] = Field(
        default=(),
        description="Haystack marker tags, e.g. [zone, air, temp, sensor] (or one string of them).",
    )

    @field_validator("haystack", mode="before")
    @classmethod
    def _split_tags(cls, value: object) -> object:
        """'zone air temp sensor' or 'zone,air,...' (a spreadsheet cell) is the list of those tags."""
        if isinstance(value, str):
            return tuple(t for t in value.replace(",", " ").replace(";", " ").split() if t)
        return value

    @property
    def tags(self) -> dict[str, str | list[str]]:
        """The point's semantic tags as samples carry them: only those set."""
        out: dict[str, str | list[str]] = {}
        if self.brick is not None:
            out["brick"] = self.brick
        if self.haystack:
            out["haystack"] = list(self.haystack)
        return out

    @property
    def choices(self) -> tuple[str, ...] | None:
        """The texts an enumerated point reads as (and accepts in writes); None for other points. Drivers with
        enumerations (Modbus labels, BACnet state texts) override it; Home Assistant shows them as options."""
        return None

    @property
    def value_kind(self) -> ValueKind | None:
        """What the point's published values are, as its configuration says before any read; None when only a
        value can tell. Drivers override it, so Home Assistant and Sparkplug can describe a point that has not
        been read yet (a device down at start)."""
        return None

    @property
    def is_scaled(self) -> bool:
        """Whether the kernel scales the raw value (scale, offset or a scale factor): then it is not whole."""
        return self.scale != 1.0 or self.offset != 0.0 or self.scale_factor is not None
