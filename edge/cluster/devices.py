"""The gateway side of cluster mode: the pollers of the devices this instance holds, and their fenced sink.

`ClusterDevices` is the member's `Holder`: it starts a device's poller when its lease is taken (its sequence
continuing from the lease's floor or the outbox's last, whichever is higher) and stops it when the lease goes.
`FencedSink` stands between each poller and the outbox: once the member no longer owns the device (lease lost,
or not renewed within the deadline) an event is not stored, whatever the poller was in the middle of.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Protocol

from edge.devices.polling import PUSH_COALESCE_WINDOW, DevicePoller
from edge.sdk.drivers import DeviceSpec
from edge.sdk.events import Event

__all__ = ["ClusterDevices", "FencedSink", "event_spacing"]

log = logging.getLogger(__name__)

PollerKey = tuple[str, str, str]


def event_spacing(specs: list[DeviceSpec]) -> dict[str, float]:
    """The least time between two sequenced events of each device: its poll interval, or the push coalescing
    window for a device that may push changes."""
    return {s.name: (s.poll_interval if s.mode == "poll" else PUSH_COALESCE_WINDOW) for s in specs}


class _Outbox(Protocol):  # the two appends a poller uses (edge/devices/polling.py)
    async def append(self, event: Event) -> None: ...

    async def append_durable(self, event: Event) -> int: ...


class FencedSink:
    def __init__(self, outbox: _Outbox, device: str, owns: Callable[[str], bool]) -> None:
        self._outbox = outbox
        self._device = device
        self._owns = owns
        self.refused = 0

    def accepts(self) -> bool:
        """Whether events of the device may be stored now; the poller asks before numbering a poll's events."""
        if self._owns(self._device):
            return True
        self.refused += 1
        if self.refused == 1:
            log.warning(
                "device %s: no longer owned by this instance; its events are not stored", self._device
            )
        return False

    async def append(self, event: Event) -> None:
        if self.accepts():
            await self._outbox.append(event)

    async def append_durable(self, event: Event) -> int:
        if self.accepts():
            return await self._outbox.append_durable(event)
        return 0


class ClusterDevices:
    def __init__(
        self,
        pollers: MutableMapping[PollerKey, DevicePoller],
        specs: Callable[[], Mapping[str, DeviceSpec]],
        start: Callable[[DeviceSpec, int, str | None], Awaitable[DevicePoller]],
        stop: Callable[[DevicePoller], Awaitable[None]],
        leaders: Callable[[str, bool], Awaitable[None]],
    ) -> None:
        self._pollers = pollers
        self._specs = specs  # the enabled devices of the configuration as of now
        self._start = start
        self._stop = stop
        self._leaders = leaders

    def _find(self, name: str) -> tuple[PollerKey, DevicePoller] | None:
        return next(((k, p) for k, p in self._pollers.items() if p.spec.name == name), None)

    async def start_device(self, name: str, sequence_floor: int, unpolled: str | None) -> None:
        spec = self._specs().get(name)
        if spec is None or self._find(name) is not None:
            return
        self._pollers[(spec.tenant, spec.site, spec.name)] = await self._start(spec, sequence_floor, unpolled)

    async def stop_device(self, name: str) -> int | None:
        found = self._find(name)
        if found is None:
            return None
        key, poller = found
        del self._pollers[key]
        await self._stop(poller)
        return poller.sequence

    def device_sequences(self) -> dict[str, int]:
        return {p.spec.name: p.sequence for p in self._pollers.values()}

    async def start_leading(self, tenant: str) -> None:
        await self._leaders(tenant, True)

    async def stop_leading(self, tenant: str) -> None:
        await self._leaders(tenant, False)
