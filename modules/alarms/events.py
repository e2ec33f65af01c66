"""What the alarms module publishes: `org.edgegw.alarm` (raised, cleared, acknowledged) and command results."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.sdk import ModuleCommandResultData

ALARM = "org.edgegw.alarm"

Condition = Literal["high", "low", "stale", "bad_quality"]


class AlarmData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["raised", "cleared", "acknowledged"]
    alarm_id: str = Field(description="'<rule>:<site>/<device>:<condition>'; acknowledge with this id.")
    rule: str
    site: str
    device: str
    point: str
    condition: Condition
    severity: Literal["critical", "major", "minor", "warning"]
    value: Any = Field(default=None, description="The point's last value when the state changed.")
    limit: float | None = Field(
        default=None, description="The limit crossed (seconds for stale/bad quality)."
    )
    message: str = ""
    since: str = Field(description="When the condition began (raised) or ended (cleared), RFC 3339.")
    acknowledged: bool = False
    acknowledged_by: str | None = None
    note: str | None = None


class AlarmCommandResultData(ModuleCommandResultData):
    """Answer to `ack` (result: the alarm) and `list` (result: {"alarms": [...]})."""
