"""What the HVAC module publishes: asset alerts (kinds off_setpoint, short_cycling, filter).

Its schedule writes appear as the kernel's `org.edgegw.command.result` events (request id `module:hvac`)."""

from __future__ import annotations

from edge.sdk import AssetFailedData

__all__ = ["AssetFailedData"]
