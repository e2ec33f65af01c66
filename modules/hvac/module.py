"""The HVAC module: zones off setpoint, short cycling and filter alarms become `org.edgegw.asset.failed`;
optional setpoint schedules are written through the drivers' write path.

Per tenant, tracks (`zone/<site>/<device>`, `cycle/<site>/<device>/<point>`) are kept in the module's store.
Events update them; a tick (`context.every`) re-checks the time-based conditions every `check_interval` (a
zone that drifts slowly sends few changes) and applies schedules. A schedule runs only for a tenant entitled
to the module (one configured for another tenant is reported at start and ignored); each occurrence of an
entry is written once (`schedule/<n>` remembers the last one applied), and a failed write is retried on the
next tick.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any
from zoneinfo import ZoneInfo

from edge.sdk import (
    TELEMETRY,
    AlertBook,
    EdgeError,
    EventBatches,
    Health,
    ModuleContext,
    StoredEvent,
    Telemetry,
    as_bool,
    current_tenant,
    parse_config,
)
from modules.hvac.config import HvacConfig, Schedule
from modules.hvac.logic import (
    CycleTrack,
    ZoneTrack,
    cycle_observe,
    prune,
    scheduled,
    zone_observe,
    zone_off_for,
)

log = logging.getLogger("edge.module.hvac")


class Hvac:
    config_model = HvacConfig  # checked by the config loader too: errors name file and field

    def __init__(self) -> None:
        self._zones: dict[str, dict[str, ZoneTrack]] = {}
        self._cycles: dict[str, dict[str, CycleTrack]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._schedules: list[tuple[int, Schedule]] = []
        self._writes = 0
        self._write_failures: dict[int, str] = {}

    async def on_init(self, context: ModuleContext) -> None:
        self._context = context
        self._config = parse_config(HvacConfig, context.config, context.name)
        self._alerts = AlertBook(context.name, context.store, context.publish)
        entitled = {t.tenant_id for t in context.tenants}
        for index, schedule in enumerate(self._config.schedules):
            if schedule.tenant in entitled:
                self._schedules.append((index, schedule))
            else:
                log.warning(
                    "modules.hvac.config.schedules.%d: tenant %r is not entitled to the hvac module; "
                    "its schedule is not applied",
                    index,
                    schedule.tenant,
                )
        self._batches = EventBatches(context, [TELEMETRY], self._handle, self._lock, name="telemetry")
        context.every(self._config.check_interval, self._tick)  # per entitled tenant, in its context

    async def on_enable(self) -> None:
        return None  # the kernel starts its subscriptions and ticks

    async def on_disable(self) -> None:
        return None  # the kernel cancels them

    async def on_health_check(self) -> Health:
        failing = "; ".join(f"schedule {i}: {r}" for i, r in self._write_failures.items())
        return Health(not failing, failing or f"{self._writes} schedule writes")

    # ---- events ------------------------------------------------------------------------------------------

    async def _handle(self, event: StoredEvent, changed: dict[str, Any]) -> None:
        telemetry = Telemetry.from_event(event)
        if telemetry is None:
            return
        c = self._config
        await self._load()
        tenant = current_tenant().tenant_id
        site, device, at = telemetry.site, telemetry.device, telemetry.time
        temperature = _number(telemetry, c.zone_temp_point)
        setpoint = _number(telemetry, c.zone_setpoint_point)
        key = f"zone/{site}/{device}"
        if (temperature is not None or setpoint is not None) and fnmatchcase(device, c.zones):
            zone = self._zones[tenant].setdefault(key, ZoneTrack())
            zone_observe(zone, temperature, setpoint, at, c.tolerance_k)
            await self._check_zone(key, zone, at)
            changed[key] = zone.to_json()
        for point in c.cycling_points:
            sample = telemetry.points.get(point)
            running = as_bool(sample.value) if sample is not None and sample.good else None
            if running is None:
                continue
            key = f"cycle/{site}/{device}/{point}"
            cycle = self._cycles[tenant].setdefault(key, CycleTrack())
            cycle_observe(cycle, running, at, c.cycling_window)
            await self._check_cycling(key, cycle, at)
            changed[key] = cycle.to_json()
        for point in c.filter_points:
            sample = telemetry.points.get(point)
            # a device flags its own alarm point 'in alarm' (BACnet status flags: quality uncertain)
            alarm = as_bool(sample.value) if sample is not None and sample.quality != "bad" else None
            if alarm is not None:
                await self._filter(site, device, point, alarm, at)

    async def _tick(self, now: float) -> None:
        async with self._lock():
            await self._load()
            tenant = current_tenant().tenant_id
            for key, zone in self._zones[tenant].items():
                await self._check_zone(key, zone, now)
            for key, cycle in self._cycles[tenant].items():
                await self._check_cycling(key, cycle, now)
        for index, schedule in self._schedules:
            if schedule.tenant == current_tenant().tenant_id:
                await self._apply_schedule(index, schedule, now)

    async def _load(self) -> None:
        tenant = current_tenant().tenant_id
        if tenant not in self._zones:
            store = self._context.store
            self._zones[tenant] = {k: ZoneTrack(**v) for k, v in await store.items("zone/")}
            self._cycles[tenant] = {k: CycleTrack(**v) for k, v in await store.items("cycle/")}

    def _lock(self) -> asyncio.Lock:
        return self._locks.setdefault(current_tenant().tenant_id, asyncio.Lock())

    # ---- conditions --------------------------------------------------------------------------------------

    async def _check_zone(self, key: str, zone: ZoneTrack, now: float) -> None:
        _, site, device = key.split("/", 2)
        off_for = zone_off_for(zone, now)
        if off_for is not None and off_for >= self._config.off_setpoint_after:
            await self._alerts.raise_alert(
                kind="off_setpoint",
                site=site,
                asset=device,
                severity="minor",
                cause=f"zone at {zone.temperature:.1f} °C, setpoint {zone.setpoint:.1f} °C, "
                f"off by more than {self._config.tolerance_k:g} K for {off_for:.0f} s",
                since=zone.off_since or now,
            )
        elif off_for is None:
            await self._alerts.clear_alert(
                kind="off_setpoint",
                site=site,
                asset=device,
                cause=f"zone at {zone.temperature} °C, back within {self._config.tolerance_k:g} K of setpoint",
                since=now,
            )

    async def _check_cycling(self, key: str, cycle: CycleTrack, now: float) -> None:
        _, site, device, point = key.split("/", 3)
        c = self._config
        starts = prune(cycle, now, c.cycling_window)
        asset = f"{device}.{point}"
        if starts > c.max_starts:
            await self._alerts.raise_alert(
                kind="short_cycling",
                site=site,
                asset=asset,
                severity="minor",
                cause=f"{starts} starts within {c.cycling_window:g} s (more than {c.max_starts})",
                since=cycle.starts[0],
            )
        elif starts <= c.max_starts // 2:  # hysteresis: clearly back to normal
            await self._alerts.clear_alert(
                kind="short_cycling",
                site=site,
                asset=asset,
                cause=f"{starts} starts within {c.cycling_window:g} s",
                since=now,
            )

    async def _filter(self, site: str, device: str, point: str, alarm: bool, at: float) -> None:
        asset = f"{device}.{point}"
        if alarm:
            await self._alerts.raise_alert(
                kind="filter",
                site=site,
                asset=asset,
                severity="minor",
                cause="filter alarm: replace the filter",
                since=at,
            )
        else:
            await self._alerts.clear_alert(
                kind="filter", site=site, asset=asset, cause="filter alarm cleared", since=at
            )

    # ---- schedules ---------------------------------------------------------------------------------------

    async def _apply_schedule(self, index: int, schedule: Schedule, now: float) -> None:
        local = datetime.fromtimestamp(now, ZoneInfo(schedule.timezone))
        due = scheduled(schedule.entries, local)
        if due is None:
            return
        occurrence, value = due
        state_key = f"schedule/{index}"
        if await self._context.store.get(state_key) == occurrence:
            return
        try:
            await self._context.write_point(schedule.site, schedule.device, schedule.point, value)
        except EdgeError as exc:
            reason = str(exc)
            if self._write_failures.get(index) != reason:  # log a failure once, not on every tick
                log.error("schedule %d: writing %s to %s/%s.%s failed: %s", index, value, schedule.site,
                          schedule.device, schedule.point, reason)  # fmt: skip
            self._write_failures[index] = reason
            return
        self._write_failures.pop(index, None)
        self._writes += 1
        log.info(
            "schedule %d: %s/%s.%s = %s (from %s)",
            index,
            schedule.site,
            schedule.device,
            schedule.point,
            value,
            occurrence,
        )
        await self._context.store.put(state_key, occurrence)


def _number(telemetry: Telemetry, point: str) -> float | None:
    sample = telemetry.points.get(point)
    if sample is None or not sample.good or isinstance(sample.value, bool):
        return None
    return float(sample.value) if isinstance(sample.value, int | float) else None
