"""The running gateway's devices, changed live: pollers added, replaced and removed without a restart.

A configuration deployment (edge.downlink.deploy) hands the device specs before and after; `LiveDevices`
starts a poller for each new device, restarts the poller of each changed one (its spec is immutable: a new
poller on the new spec, resuming its event sequence), and stops each removed one (a clean stop: its
"stopped" status event is committed). The pollers mapping is the one the command path, status and health
read, so writes reach a new device at once and a removed one is refused as unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass

from edge.devices.polling import DevicePoller
from edge.sdk.drivers import DeviceSpec

__all__ = ["DeviceChanges", "LiveDevices", "diff_devices"]

log = logging.getLogger(__name__)

PollerKey = tuple[str, str, str]  # (tenant, site, device)


@dataclass(frozen=True)
class DeviceChanges:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def touched(self) -> tuple[str, ...]:
        """The devices that must come up for a deployment to count as healthy."""
        return self.added + self.changed

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def diff_devices(old: Sequence[DeviceSpec], new: Sequence[DeviceSpec]) -> DeviceChanges:
    before = {d.name: d for d in old}
    after = {d.name: d for d in new}
    return DeviceChanges(
        added=tuple(n for n in after if n not in before),
        changed=tuple(n for n in after if n in before and after[n] != before[n]),
        removed=tuple(n for n in before if n not in after),
    )


class LiveDevices:
    def __init__(
        self,
        pollers: MutableMapping[PollerKey, DevicePoller],
        start: Callable[[DeviceSpec], Awaitable[DevicePoller]],
        stop: Callable[[DevicePoller], Awaitable[None]],
    ) -> None:
        self._pollers = pollers
        self._start = start
        self._stop = stop

    def running(self) -> list[DeviceSpec]:
        return [p.spec for p in self._pollers.values()]

    async def apply(self, wanted: Sequence[DeviceSpec]) -> DeviceChanges:
        """Make the running devices `wanted` (the enabled ones of the new configuration)."""
        changes = diff_devices(self.running(), wanted)
        specs = {d.name: d for d in wanted}
        for key, poller in list(self._pollers.items()):
            if poller.spec.name in changes.removed or poller.spec.name in changes.changed:
                del self._pollers[key]
                await self._stop(poller)
        for name in changes.changed + changes.added:
            spec = specs[name]
            self._pollers[(spec.tenant, spec.site, spec.name)] = await self._start(spec)
        if changes:
            log.info(
                "devices changed live: added %s, changed %s, removed %s",
                list(changes.added) or "-",
                list(changes.changed) or "-",
                list(changes.removed) or "-",
            )
        return changes

    def down(self, names: Sequence[str]) -> dict[str, str]:
        """Of these devices, those not up yet, with the reason when known."""
        by_name = {p.spec.name: p for p in self._pollers.values()}
        out = {}
        for name in names:
            poller = by_name.get(name)
            if poller is None:
                out[name] = "not running"
            elif poller.stats.up is not True:
                out[name] = poller.stats.last_error or "not read yet"
        return out
