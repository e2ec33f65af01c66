"""The tasks behind `ModuleContext.every`, owned by whoever hosts the module: `edge.module_host.host` for an
in-process module, `edge.sdk.runner` in an isolated module's process. Not part of the plug-in surface.

One task per registration and entitled tenant, so a slow or failing tenant never delays another's ticks and
a revoked tenant's ticks stop without touching the others'. Each call runs inside the tenant's context, so
publishing and the module's store are scoped as for events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from edge.sdk.grid import sleep_until_next_tick
from edge.sdk.modules import TickHandler
from edge.sdk.tenancy import TenantContext, tenant_scope

__all__ = ["TenantTicks", "Tick"]


@dataclass(frozen=True)
class Tick:
    """One `every(interval, fn)` registration."""

    interval: float
    fn: TickHandler

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"every(): interval must be > 0 seconds, not {self.interval!r}")


class TenantTicks:
    """A module's registered ticks, run per tenant: `follow(tenants)` starts the ticks of tenants not seen
    before and cancels those of tenants gone; `close` cancels all. `on_error` counts a call that raised."""

    def __init__(self, module: str, ticks: Sequence[Tick], on_error: Callable[[], None]) -> None:
        self._module = module
        self._ticks = ticks  # the module's list: read when a tenant starts, so it sees every registration
        self._on_error = on_error
        self._log = logging.getLogger(f"edge.module.{module}")
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}

    @property
    def tenants(self) -> set[str]:
        return set(self._tasks)

    def start(self, tenant: TenantContext) -> None:
        if tenant.tenant_id in self._tasks:
            return
        self._tasks[tenant.tenant_id] = [
            asyncio.create_task(
                self._run(tenant, tick), name=f"module-{self._module}-tick-{tenant.tenant_id}"
            )
            for tick in self._ticks
        ]

    async def stop(self, tenant_id: str) -> None:
        tasks = self._tasks.pop(tenant_id, [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # a tick is never left running after stop

    async def follow(self, tenants: Iterable[TenantContext]) -> None:
        wanted = {t.tenant_id: t for t in tenants}
        for tenant_id in set(self._tasks) - set(wanted):
            await self.stop(tenant_id)
        for tenant in wanted.values():
            self.start(tenant)

    async def close(self) -> None:
        for tenant_id in list(self._tasks):
            await self.stop(tenant_id)

    async def _run(self, tenant: TenantContext, tick: Tick) -> None:
        with tenant_scope(tenant):
            while True:
                await sleep_until_next_tick(tick.interval)  # with the gateway's other periodic work
                try:
                    await tick.fn(time.time())
                except Exception:  # one bad tick never stops a module's time-based checks
                    self._on_error()
                    self._log.exception("periodic work for tenant %s failed", tenant.tenant_id)
