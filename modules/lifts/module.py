"""The lifts module: trips and door cycles per lift, and `org.edgegw.asset.failed` for stuck cars, doors that
fail to close and controller fault codes (raised once, cleared when resolved).

Per tenant, each lift's track (`lift/<site>/<device>`, see `watch.LiftTrack`) is kept in the module's store,
written once per batch of events (`EventBatches`). Events update it; a tick (`context.every`) re-checks the
time-based faults (a stuck car pushes no more changes) every `check_interval` and publishes
`org.edgegw.lift.usage` once per `report_interval` for every lift seen.
"""

from __future__ import annotations

import asyncio
import logging
from fnmatch import fnmatchcase
from typing import Any

from edge.sdk import (
    TELEMETRY,
    AlertBook,
    EventBatches,
    Health,
    ModuleContext,
    StoredEvent,
    Telemetry,
    as_bool,
    current_tenant,
    parse_config,
    rfc3339,
)
from modules.lifts.config import LiftsConfig
from modules.lifts.events import LIFT_USAGE
from modules.lifts.watch import LiftTrack, conditions, observe

log = logging.getLogger("edge.module.lifts")


class Lifts:
    config_model = LiftsConfig  # checked by the config loader too: errors name file and field

    def __init__(self) -> None:
        self._tracks: dict[str, dict[str, LiftTrack]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def on_init(self, context: ModuleContext) -> None:
        self._context = context
        self._config = parse_config(LiftsConfig, context.config, context.name)
        self._alerts = AlertBook(context.name, context.store, context.publish)
        self._batches = EventBatches(context, [TELEMETRY], self._handle, self._lock, name="telemetry")
        context.every(self._config.check_interval, self._tick)  # per entitled tenant, in its context

    async def on_enable(self) -> None:
        return None  # the kernel starts its subscriptions and ticks

    async def on_disable(self) -> None:
        return None  # the kernel cancels them

    async def on_health_check(self) -> Health:
        lifts = sum(len(tracks) for tracks in self._tracks.values())
        return Health(True, f"{lifts} lifts watched")

    async def _handle(self, event: StoredEvent, changed: dict[str, Any]) -> None:
        telemetry = Telemetry.from_event(event)
        if telemetry is None or not fnmatchcase(telemetry.device, self._config.devices):
            return
        values = _good_values(telemetry, self._config)
        if not values:
            return
        tracks = await self._tenant_tracks()
        key = f"lift/{telemetry.site}/{telemetry.device}"
        track = tracks.setdefault(key, LiftTrack(period_start=telemetry.time))
        observe(track, values, telemetry.time, self._config)
        await self._check(key, track, telemetry.time)
        changed[key] = track.to_json()

    async def _tick(self, now: float) -> None:
        async with self._lock():
            changed: dict[str, Any] = {}
            for key, track in (await self._tenant_tracks()).items():
                await self._check(key, track, now)
                if (
                    track.period_start is not None
                    and now - track.period_start >= self._config.report_interval
                ):
                    await self._report(key, track, now)
                changed[key] = track.to_json()
            if changed:
                await self._context.store.apply(changed)  # every lift in one transaction

    async def _check(self, key: str, track: LiftTrack, now: float) -> None:
        _, site, device = key.split("/", 2)
        for condition in conditions(track, now, self._config):
            if condition.holds:
                await self._alerts.raise_alert(
                    kind=condition.kind,
                    site=site,
                    asset=device,
                    severity=condition.severity,
                    cause=condition.cause,
                    since=condition.since,
                )
            else:
                await self._alerts.clear_alert(
                    kind=condition.kind, site=site, asset=device, cause=condition.cause, since=now
                )

    async def _report(self, key: str, track: LiftTrack, now: float) -> None:
        _, site, device = key.split("/", 2)
        data: dict[str, Any] = {
            "site": site,
            "device": device,
            "start": rfc3339(track.period_start or now),
            "end": rfc3339(now),
            "trips": track.period_trips,
            "door_cycles": track.period_door_cycles,
            "total_trips": track.trips,
            "total_door_cycles": track.door_cycles,
            "counter_resets": track.counter_resets,
        }
        await self._context.publish(LIFT_USAGE, f"{site}/{device}", data)
        track.period_start, track.period_trips, track.period_door_cycles = now, 0, 0

    async def _tenant_tracks(self) -> dict[str, LiftTrack]:
        tenant = current_tenant().tenant_id
        if tenant not in self._tracks:
            stored = await self._context.store.items("lift/")
            self._tracks[tenant] = {key: LiftTrack.from_json(value) for key, value in stored}
        return self._tracks[tenant]

    def _lock(self) -> asyncio.Lock:
        return self._locks.setdefault(current_tenant().tenant_id, asyncio.Lock())


def _good_values(telemetry: Telemetry, config: LiftsConfig) -> dict[str, Any]:
    """The good values of the points the module follows, typed (the door as a bool, numbers as numbers)."""
    p = config.points
    out: dict[str, Any] = {}
    for name in (p.position, p.speed, p.fault_code, p.trip_counter, p.current_floor):
        sample = telemetry.points.get(name)
        if sample is not None and sample.good and isinstance(sample.value, int | float):
            out[name] = sample.value
    door = telemetry.points.get(p.door_open)
    if door is not None and door.good and as_bool(door.value) is not None:
        out[p.door_open] = as_bool(door.value)
    return out
