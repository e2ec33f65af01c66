"""The alarms module's configuration: a list of threshold rules, each on one point of matching devices."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.sdk import Name

Severity = Literal["critical", "major", "minor", "warning"]


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Name
    point: Name = Field(description="The point the rule watches, on every matching device.")
    devices: str = Field(default="*", description="Glob on device names, e.g. 'inv-*'.")
    sites: str = Field(default="*", description="Glob on site ids.")
    high: float | None = Field(default=None, description="Raised above this value.")
    low: float | None = Field(default=None, description="Raised below this value.")
    hysteresis: float = Field(default=0.0, ge=0.0, description="Cleared only this far back inside the limit.")
    delay: float = Field(
        default=0.0, ge=0.0, description="Seconds the limit must be exceeded before raising."
    )
    stale_after: float | None = Field(
        default=None, gt=0.0, description="Raised when no update for this long."
    )
    bad_quality_after: float | None = Field(
        default=None, ge=0.0, description="Raised when the point's quality is not good for this long."
    )
    severity: Severity = "major"
    message: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _something_to_watch(self) -> Rule:
        if (
            self.high is None
            and self.low is None
            and self.stale_after is None
            and self.bad_quality_after is None
        ):
            raise ValueError("a rule needs at least one of high, low, stale_after, bad_quality_after")
        if self.high is not None and self.low is not None and self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class AlarmsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[Rule, ...] = Field(min_length=1)
    check_interval: float = Field(default=1.0, gt=0.0, le=60.0, description="Seconds between time checks.")

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        seen: set[str] = set()
        for rule in rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        return rules
