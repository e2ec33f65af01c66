"""Counters the gateway keeps about itself, shown by `edge run`'s status line, `edge status` and the API.

`quota_samples` lists the per-tenant limit counters as (metric name, labels, value), the form a metrics
exporter (Prometheus text) takes as it is.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

# Upper bounds (seconds) of the poll-duration histogram's buckets (/metrics): fixed, so a device costs the same
# dozen series however it behaves; a Modbus poll takes milliseconds, a poll that times out seconds.
POLL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class DeviceStats:
    up: bool | None = None  # None until the first poll finishes
    since: float = field(default_factory=time.monotonic)
    polls: int = 0
    poll_seconds: float = 0.0  # time spent reading the device, all polls together
    # polls per bucket of POLL_BUCKETS (the last counts the slower ones): /metrics' poll-duration histogram
    poll_buckets: list[int] = field(default_factory=lambda: [0] * (len(POLL_BUCKETS) + 1))
    failed_polls: int = 0
    points_read: int = 0  # published points read with a usable value
    bad_points: int = 0
    overruns: int = 0
    last_error: str | None = None

    def timed_poll(self, seconds: float) -> None:
        """Count how long one poll read the device (the poller calls it once per poll)."""
        self.poll_seconds += seconds
        self.poll_buckets[bisect.bisect_left(POLL_BUCKETS, seconds)] += 1


@dataclass
class QuotaCounter:
    """How often one tenant's limit acted, by its policy: `slowed` (the tenant waited: `waited_s` seconds in
    all) or `refused` (requests, commands or clients turned away with the reason; `units` of them)."""

    limit: float
    policy: str  # "slow" or "refuse"
    acted: int = 0
    units: float = 0.0
    waited_s: float = 0.0
    last_acted: float | None = None  # wall-clock time

    def act(self, units: float, waited: float = 0.0) -> None:
        self.acted += 1
        self.units += units
        self.waited_s += waited
        self.last_acted = time.time()


@dataclass
class GatewayStats:
    started: float = field(default_factory=time.monotonic)
    devices: dict[str, DeviceStats] = field(default_factory=dict)
    events_published: int = 0
    point_updates_published: int = 0
    commands_accepted: int = 0
    commands_rejected: int = 0
    task_restarts: dict[str, int] = field(default_factory=dict)
    quotas: dict[str, dict[str, QuotaCounter]] = field(
        default_factory=dict
    )  # tenant -> limit name -> counter

    def quota(self, tenant: str, name: str) -> QuotaCounter:
        return self.quotas[tenant][name]

    def quota_samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        """Per tenant and limit: the limit (a gauge), how often it acted, the units slowed or refused and the
        seconds waited (counters; Prometheus adds `_total` to their names)."""
        for tenant, limits in sorted(self.quotas.items()):
            for name, c in sorted(limits.items()):
                labels = {"tenant": tenant, "limit": name, "policy": c.policy}
                yield "edge_tenant_limit", labels, c.limit
                yield "edge_tenant_limit_acted", labels, float(c.acted)
                yield "edge_tenant_limit_units", labels, c.units
                yield "edge_tenant_limit_waited_seconds", labels, c.waited_s

    def device(self, name: str) -> DeviceStats:
        return self.devices.setdefault(name, DeviceStats())

    @property
    def points_read(self) -> int:
        return sum(d.points_read for d in self.devices.values())

    @property
    def devices_up(self) -> int:
        return sum(1 for d in self.devices.values() if d.up)
