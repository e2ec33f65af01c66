"""Liveness and readiness of a running gateway, from checks that mean something.

- live: the process can do its work at all. The event loop answers (its lag, measured by `LoopLag`, stays
  under `MAX_LOOP_LAG`) and storage takes writes (the outbox commits without failing, the data directory is
  writable with free space). A gateway that is not live should be restarted: the systemd watchdog is fed
  only while it is live.
- ready: live, and events flow: the broker is reachable.
- degraded: ready, but some device is down or some module reports a problem (shown, not restarted for).

`gateway_health(gateway)` is the one function the REST API calls; `edge status` reads the same report from
the status file the gateway rewrites every second (`write_status_file`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

if TYPE_CHECKING:
    from edge.gateway import Gateway

__all__ = [
    "MAX_LOOP_LAG",
    "STATUS_FILE",
    "Check",
    "HealthMonitor",
    "HealthReport",
    "LoopLag",
    "gateway_health",
    "write_status_file",
]

MAX_LOOP_LAG = 1.0  # seconds; a loop this late misses polls and MQTT keep-alives
MIN_FREE_BYTES = 50 * 2**20  # below this the next checkpoint of the outbox may fail
STATUS_FILE = "status.json"

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
            "checks": [asdict(c) for c in self.checks],
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> HealthReport:
        return cls(tuple(Check(**c) for c in body.get("checks", ())))


class LoopLag:
    """How late the event loop wakes a task that asked to sleep `interval`: the loop's responsiveness."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.last = 0.0
        self.worst = 0.0  # since the last `take_worst`
        self._beat = time.monotonic()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.last = max(0.0, loop.time() - start - self.interval)
            self.worst = max(self.worst, self.last)
            self._beat = time.monotonic()

    def current(self) -> float:
        """The lag now: a loop blocked right now has not run `run` for a while, which counts too."""
        silent = time.monotonic() - self._beat - self.interval
        return max(self.last, silent)

    def take_worst(self) -> float:
        worst, self.worst = max(self.worst, self.current()), 0.0
        return worst


class HealthMonitor:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self.lag = LoopLag()
        self._failures_seen = 0

    async def check(self) -> HealthReport:
        gw = self._gateway
        checks = [self._loop(), self._storage(gw), self._broker(gw)]
        checks += _drivers(gw)
        for name, health in (await gw.modules.health()).items():
            checks.append(Check(f"module:{name}", health.ok, health.detail or "ok", "info"))
        return HealthReport(tuple(checks))

    def _loop(self) -> Check:
        lag = self.lag.take_worst()
        return Check(
            "loop", lag < MAX_LOOP_LAG, f"lag {lag * 1000:.0f} ms (limit {MAX_LOOP_LAG:.0f} s)", "live"
        )

    def _storage(self, gw: Gateway) -> Check:
        failures, self._failures_seen = (
            gw.outbox.commit_failures - self._failures_seen,
            gw.outbox.commit_failures,
        )
        directory = gw.loaded.data_dir
        if failures:
            return Check("storage", False, f"{failures} outbox commits failed since the last check", "live")
        if not os.access(directory, os.W_OK):
            return Check("storage", False, f"{directory} is not writable", "live")
        free = shutil.disk_usage(directory).free
        if free < MIN_FREE_BYTES:
            return Check("storage", False, f"{free // 2**20} MiB free in {directory}", "live")
        return Check("storage", True, f"commits ok, {free // 2**20} MiB free", "live")

    @staticmethod
    def _broker(gw: Gateway) -> Check:
        bus = gw.config.bus
        where = f"{bus.host}:{bus.port}"
        return Check(
            "broker",
            gw.bus.connected,
            f"{'connected to' if gw.bus.connected else 'cannot reach'} {where}",
            "ready",
        )


async def gateway_health(gateway: Gateway) -> HealthReport:
    """Liveness, readiness and every check of a running gateway (HTTP: 200 if ready, 503 otherwise)."""
    return await gateway.health.check()


def _drivers(gw: Gateway) -> list[Check]:
    by_driver: dict[str, list[tuple[str, bool | None]]] = {}
    for (_, _, name), poller in gw.pollers.items():
        by_driver.setdefault(poller.spec.driver, []).append((name, gw.stats.device(name).up))
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


def write_status_file(path: Path, body: dict[str, Any]) -> None:
    """Replace the status file atomically (write, fsync-free rename): readers never see half a file."""
    body = {"pid": os.getpid(), "time": time.time(), **body}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(body))
    tmp.replace(path)
