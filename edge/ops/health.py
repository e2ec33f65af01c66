"""Liveness and readiness of a running gateway, from checks that mean something.

- live: the process can do its work at all. The event loop answers (its lag, measured by `LoopLag`, stays
  under `MAX_LOOP_LAG`) and storage takes writes (the outbox commits without failing, the data directory is
  writable with free space). A gateway that is not live should be restarted: the systemd watchdog is fed
  only while it is live.
- ready: live, and events flow: the broker is reachable.
- degraded: ready, but some device is down or some module reports a problem (shown, not restarted for).

`HealthMonitor` is handed the parts it checks (by edge.gateway), not the gateway; `edge status` reads the same
report from the status file the gateway rewrites every two seconds (edge.ops.status).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from edge.ops.stats import GatewayStats
from edge.sdk.drivers import DeviceSpec
from edge.sdk.grid import sleep_until_next_tick
from edge.sdk.modules import Health

__all__ = [
    "MAX_LOOP_LAG",
    "Check",
    "HealthMonitor",
    "HealthReport",
    "LoopLag",
]

MAX_LOOP_LAG = 1.0  # seconds; a loop this late misses polls and MQTT keep-alives
MIN_FREE_BYTES = 50 * 2**20  # below this the next checkpoint of the outbox may fail

Scope = Literal["live", "ready", "info"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str  # "loop", "storage", "broker", "driver:modbus", "module:cloud_sync"
    ok: bool
    detail: str
    scope: Scope  # what a failure costs: liveness, readiness, or nothing but a warning


@dataclass(frozen=True, slots=True)
class HealthReport:
    checks: tuple[Check, ...]

    @property
    def live(self) -> bool:
        return all(c.ok for c in self.checks if c.scope == "live")

    @property
    def ready(self) -> bool:
        return self.live and all(c.ok for c in self.checks if c.scope == "ready")

    @property
    def degraded(self) -> bool:
        return any(not c.ok for c in self.checks if c.scope == "info")

    @property
    def state(self) -> str:
        if not self.live:
            return "not live"
        if not self.ready:
            return "not ready"
        return "degraded" if self.degraded else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "live": self.live,
            "ready": self.ready,
            "checks": [
                {"name": c.name, "ok": c.ok, "detail": c.detail, "scope": c.scope} for c in self.checks
            ],  # asdict would deep-copy each string, every second
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> HealthReport:
        return cls(tuple(Check(**c) for c in body.get("checks", ())))


class LoopLag:
    """How late the event loop wakes a task that asked to sleep until the next `interval` tick: the loop's
    responsiveness. On the gateway's shared grid (edge.sdk.grid): the probe costs no wakeup of its own."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.last = 0.0
        self.worst = 0.0  # since the last `take_worst`
        self._beat = time.monotonic()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            deadline = await sleep_until_next_tick(self.interval)
            self.last = max(0.0, loop.time() - deadline)
            self.worst = max(self.worst, self.last)
            self._beat = time.monotonic()

    def current(self) -> float:
        """The lag now: a loop blocked right now has not run `run` for a while, which counts too."""
        silent = time.monotonic() - self._beat - self.interval
        return max(self.last, silent)

    def take_worst(self) -> float:
        worst, self.worst = max(self.worst, self.current()), 0.0
        return worst


class _Commits(Protocol):
    @property
    def commit_failures(self) -> int: ...


class _Link(Protocol):
    @property
    def connected(self) -> bool: ...


class _Polled(Protocol):
    @property
    def spec(self) -> DeviceSpec: ...


class _Modules(Protocol):
    async def health(self) -> Mapping[str, Health]: ...


class HealthMonitor:
    """Checks the parts a gateway runs on: its loop, outbox and data directory, broker, devices and modules.

    `pollers` is the gateway's live mapping of polled devices; `broker_address` names the broker in details."""

    def __init__(
        self,
        *,
        data_dir: Path,
        outbox: _Commits,
        bus: _Link,
        broker_address: str,
        pollers: Mapping[tuple[str, str, str], _Polled],
        stats: GatewayStats,
        modules: _Modules,
    ) -> None:
        self._data_dir = data_dir
        self._outbox = outbox
        self._bus = bus
        self._broker_address = broker_address
        self._pollers = pollers
        self._stats = stats
        self._modules = modules
        self.lag = LoopLag()
        self._failures_seen = 0

    async def check(self) -> HealthReport:
        checks = [self._loop(), self._storage(), self._broker(), *self._drivers()]
        for name, health in (await self._modules.health()).items():
            checks.append(Check(f"module:{name}", health.ok, health.detail or "ok", "info"))
        return HealthReport(tuple(checks))

    def _loop(self) -> Check:
        lag = self.lag.take_worst()
        return Check(
            "loop", lag < MAX_LOOP_LAG, f"lag {lag * 1000:.0f} ms (limit {MAX_LOOP_LAG:.0f} s)", "live"
        )

    def _storage(self) -> Check:
        failures, self._failures_seen = (
            self._outbox.commit_failures - self._failures_seen,
            self._outbox.commit_failures,
        )
        directory = self._data_dir
        if failures:
            return Check("storage", False, f"{failures} outbox commits failed since the last check", "live")
        if not os.access(directory, os.W_OK):
            return Check("storage", False, f"{directory} is not writable", "live")
        free = shutil.disk_usage(directory).free
        if free < MIN_FREE_BYTES:
            return Check("storage", False, f"{free // 2**20} MiB free in {directory}", "live")
        return Check("storage", True, f"commits ok, {free // 2**20} MiB free", "live")

    def _broker(self) -> Check:
        connected = self._bus.connected
        return Check(
            "broker",
            connected,
            f"{'connected to' if connected else 'cannot reach'} {self._broker_address}",
            "ready",
        )

    def _drivers(self) -> list[Check]:
        by_driver: dict[str, list[tuple[str, bool | None]]] = {}
        for (_, _, name), poller in self._pollers.items():
            by_driver.setdefault(poller.spec.driver, []).append((name, self._stats.device(name).up))
        checks = []
        for driver, devices in sorted(by_driver.items()):
            down = sorted(name for name, up in devices if up is False)
            waiting = sum(1 for _, up in devices if up is None)
            detail = f"{len(devices) - len(down) - waiting}/{len(devices)} devices up"
            if waiting:
                detail += f", {waiting} not polled yet"
            if down:
                detail += f"; down: {', '.join(down[:10])}" + (" ..." if len(down) > 10 else "")
            checks.append(Check(f"driver:{driver}", not down, detail, "info"))
        return checks
