"""The solar module: `org.edgegw.energy.produced` per inverter and interval, offline and weak inverters.

Per tenant, each inverter's accounting state (`inv/<site>/<device>`, see `energy.Track`) is kept in the
module's store, written once per batch of telemetry events (`EventBatches`), so a restart resumes the open
interval; a batch offered again after a crash changes nothing (samples not newer than the last are ignored). An interval is
published before the state that closed it is stored: a crash in between publishes the same interval again
(same site, device and start), which billing counts once; the opposite order could lose it.

Alerts (`org.edgegw.asset.failed`): `offline` when the power point has not been good for `offline_after`
seconds, cleared by the next good sample (checked as polls arrive and every `check_interval`, which also closes
a down inverter's intervals on time: a device that stops answering sends one bad poll, then nothing); `underperforming` when an inverter produces below `ratio` of the
median of its peers at the same site (normalised by `capacities`) for `after` seconds while they produce.
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
    Sample,
    StoredEvent,
    Telemetry,
    current_tenant,
    parse_config,
    rfc3339,
)
from modules.solar.config import SolarConfig
from modules.solar.energy import Interval, Settings, Track, add_sample, close_until, peers_median
from modules.solar.events import ENERGY_PRODUCED

log = logging.getLogger("edge.module.solar")


class Solar:
    config_model = SolarConfig  # checked by the config loader too: errors name file and field

    def __init__(self) -> None:
        self._tracks: dict[str, dict[str, Track]] = {}  # tenant -> key -> track (cache of the store)
        self._locks: dict[str, asyncio.Lock] = {}
        self._published = 0

    async def on_init(self, context: ModuleContext) -> None:
        self._context = context
        self._config = parse_config(SolarConfig, context.config, context.name)
        c = self._config
        self._settings = Settings(c.interval, c.max_gap, c.source, c.max_power_w)
        self._alerts = AlertBook(context.name, context.store, context.publish)
        self._batches = EventBatches(context, [TELEMETRY], self._handle, self._lock, name="telemetry")
        context.every(c.check_interval, self._tick)  # per entitled tenant, in its context

    async def on_enable(self) -> None: ...

    async def on_disable(self) -> None: ...

    async def on_health_check(self) -> Health:
        return Health(True, f"{self._published} intervals published since start")

    def _lock(self) -> asyncio.Lock:
        return self._locks.setdefault(current_tenant().tenant_id, asyncio.Lock())

    async def _handle(self, event: StoredEvent, changed: dict[str, Any]) -> None:
        telemetry = Telemetry.from_event(event)
        c = self._config
        if telemetry is None or not fnmatchcase(telemetry.device, c.devices):
            return
        power = telemetry.points.get(c.power_point)
        counter = telemetry.points.get(c.energy_point) if c.energy_point else None
        if power is None and counter is None:
            return  # not an inverter (or not a point we follow changed)
        tracks = await self._tenant_tracks()
        key = f"inv/{telemetry.site}/{telemetry.device}"
        track = tracks.setdefault(key, Track())
        watts, wh = _number(power), _number(counter)
        if watts is None and wh is None:
            closed = close_until(track, telemetry.time, self._settings)
            await self._offline(track, telemetry, power)
        else:
            closed = add_sample(track, telemetry.time, watts, wh, self._settings)
            await self._online(track, telemetry)
            if watts is not None:
                await self._compare_with_peers(tracks, track, telemetry, watts)
        for interval in closed:
            await self._publish(telemetry.site, telemetry.device, interval)
        changed[key] = track.to_json()

    async def _tenant_tracks(self) -> dict[str, Track]:
        tenant = current_tenant().tenant_id
        if tenant not in self._tracks:
            stored = await self._context.store.items("inv/")
            self._tracks[tenant] = {key: Track.from_json(value) for key, value in stored}
        return self._tracks[tenant]

    async def _publish(self, site: str, device: str, interval: Interval) -> None:
        length = interval.end - interval.start
        data: dict[str, Any] = {
            "site": site,
            "device": device,
            "start": rfc3339(interval.start),
            "end": rfc3339(interval.end),
            "interval_s": length,
            "energy_wh": interval.energy_wh,
            "recovered_wh": interval.recovered_wh,
            "coverage": round(min(1.0, interval.covered_s / length), 4),
            "methods": list(interval.methods),
            "gaps": interval.gaps,
            "counter_resets": interval.counter_resets,
        }
        await self._context.publish(ENERGY_PRODUCED, f"{site}/{device}", data)
        self._published += 1

    async def _offline(self, track: Track, telemetry: Telemetry, power: Sample | None) -> None:
        if track.bad_since is None:
            track.bad_since = telemetry.time
        if telemetry.time - track.bad_since >= self._config.offline_after:
            quality = power.quality if power is not None else "missing"
            await self._raise_offline(
                telemetry.site, telemetry.device, track.bad_since, telemetry.time, quality
            )

    async def _raise_offline(self, site: str, device: str, since: float, now: float, quality: str) -> None:
        cause = f"no good {self._config.power_point} for {now - since:.0f} s (quality {quality})"
        await self._alerts.raise_alert(
            kind="offline", site=site, asset=device, severity="major", cause=cause, since=since
        )

    async def _tick(self, now: float) -> None:
        """Time goes on for an inverter that stopped answering: a down device sends one all-bad poll, then
        nothing until it answers again, so its intervals are closed and its offline alert raised here, on time,
        as the bad polls used to do. What it produced meanwhile comes later from its counter (`recovered_wh`)."""
        async with self._lock():
            for key, track in (await self._tenant_tracks()).items():
                if track.bad_since is None:
                    continue
                _, site, device = key.split("/", 2)
                closed = close_until(track, now, self._settings)
                for interval in closed:
                    await self._publish(site, device, interval)
                if closed:
                    await self._context.store.put(key, track.to_json())
                if now - track.bad_since >= self._config.offline_after:
                    await self._raise_offline(site, device, track.bad_since, now, "bad")

    async def _online(self, track: Track, telemetry: Telemetry) -> None:
        if track.bad_since is None:
            return
        track.bad_since = None
        await self._alerts.clear_alert(
            kind="offline",
            site=telemetry.site,
            asset=telemetry.device,
            cause="producing data again",
            since=telemetry.time,
        )

    async def _compare_with_peers(
        self, tracks: dict[str, Track], track: Track, telemetry: Telemetry, watts: float
    ) -> None:
        rules = self._config.underperformance
        site_prefix = f"inv/{telemetry.site}/"
        mine = f"{site_prefix}{telemetry.device}"
        peers: list[float] = []
        raw: list[float] = []
        for key, peer in tracks.items():
            if (
                key == mine
                or not key.startswith(site_prefix)
                or peer.last_power is None
                or peer.last_time is None
            ):
                continue
            if telemetry.time - peer.last_time > self._config.max_gap or peer.bad_since is not None:
                continue
            raw.append(peer.last_power)
            peers.append(peer.last_power / rules.capacities.get(key.removeprefix(site_prefix), 1.0))
        median, median_raw = peers_median(peers), peers_median(raw)
        if (
            median is None
            or median_raw is None
            or len(peers) < rules.min_peers
            or median_raw < rules.min_power_w
        ):
            return  # night, or too few peers: no verdict either way
        own = watts / rules.capacities.get(telemetry.device, 1.0)
        share = own / median if median > 0 else 1.0
        if share < rules.ratio:
            if track.low_since is None:
                track.low_since = telemetry.time
            if telemetry.time - track.low_since >= rules.after:
                await self._alerts.raise_alert(
                    kind="underperforming",
                    site=telemetry.site,
                    asset=telemetry.device,
                    severity="warning",
                    cause=f"{watts:.0f} W, {share:.0%} of the median of {len(peers)} peers ({median_raw:.0f} W)",
                    since=track.low_since,
                )
        elif share >= min(1.0, rules.ratio + 0.1):  # hysteresis: back clearly above the threshold
            track.low_since = None
            await self._alerts.clear_alert(
                kind="underperforming",
                site=telemetry.site,
                asset=telemetry.device,
                cause=f"{watts:.0f} W, {share:.0%} of its peers' median",
                since=telemetry.time,
            )


def _number(sample: Sample | None) -> float | None:
    if sample is None or not sample.good or isinstance(sample.value, bool):
        return None
    return float(sample.value) if isinstance(sample.value, int | float) else None
