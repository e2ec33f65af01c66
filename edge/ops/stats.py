"""Counters the gateway keeps about itself, shown by `edge run`'s status line and later by the API."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class DeviceStats:
    up: bool | None = None  # None until the first poll finishes
    since: float = field(default_factory=time.monotonic)
    polls: int = 0
    poll_seconds: float = 0.0  # time spent reading the device, all polls together (/metrics: mean per poll)
    failed_polls: int = 0
    points_read: int = 0  # published points read with a usable value
    bad_points: int = 0
    overruns: int = 0
    last_error: str | None = None


@dataclass
class GatewayStats:
    started: float = field(default_factory=time.monotonic)
    devices: dict[str, DeviceStats] = field(default_factory=dict)
    events_published: int = 0
    point_updates_published: int = 0
    commands_accepted: int = 0
    commands_rejected: int = 0
    task_restarts: dict[str, int] = field(default_factory=dict)

    def device(self, name: str) -> DeviceStats:
        return self.devices.setdefault(name, DeviceStats())

    @property
    def points_read(self) -> int:
        return sum(d.points_read for d in self.devices.values())

    @property
    def devices_up(self) -> int:
        return sum(1 for d in self.devices.values() if d.up)
