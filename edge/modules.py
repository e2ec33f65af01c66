"""Modules: domain logic as plug-ins, hosted by the kernel.

A module implements four hooks (`on_init`, `on_enable`, `on_disable`, `on_health_check`) and sees only its
`ModuleContext`: its config, the tenants entitled to it, and a handle to subscribe to and publish events.
Its subscription is a durable outbox consumer (`module:<name>` cursor, per tenant), so a module that was down
resumes where it stopped. A tenant without the module's entitlement flag gets none of its events routed
there. The host owns each module's state; a module that raises is reported by name and the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from edge.events import make_event
from edge.plugins import LoadedPlugin
from edge.storage import StoredEvent
from edge.storage.sqlite import SqliteOutbox
from edge.tenancy import TenantContext, current_tenant, tenant_scope

log = logging.getLogger(__name__)

EventHandler = Callable[[StoredEvent], Awaitable[None]]


class ModuleState(StrEnum):
    LOADED = "loaded"
    ENABLED = "enabled"
    DISABLED = "disabled"
    FAILED = "failed"


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


@runtime_checkable
class Module(Protocol):
    async def on_init(self, context: ModuleContext) -> None: ...
    async def on_enable(self) -> None: ...
    async def on_disable(self) -> None: ...
    async def on_health_check(self) -> Health: ...


@dataclass
class _Subscription:
    types: tuple[str, ...]
    handler: EventHandler


class ModuleContext:
    """Everything a module may touch: the kernel's public API for plug-ins."""

    def __init__(
        self,
        name: str,
        config: dict[str, Any],
        tenants: Sequence[TenantContext],
        outbox: SqliteOutbox,
        gateway_id: str,
    ) -> None:
        self.name = name
        self.config = config
        self.tenants = tuple(tenants)
        self.log = logging.getLogger(f"edge.module.{name}")
        self._outbox = outbox
        self._source = f"/{gateway_id}/modules/{name}"
        self.subscriptions: list[_Subscription] = []

    def subscribe(self, types: Sequence[str], handler: EventHandler) -> None:
        """Receive committed events of these types, per entitled tenant, in outbox order, at least once."""
        self.subscriptions.append(_Subscription(tuple(types), handler))

    async def publish(self, type: str, subject: str, data: dict[str, Any]) -> None:
        """Publish an event for the current tenant (the one whose event is being handled)."""
        event = make_event(
            type=type,
            source=self._source,
            subject=subject,
            tenant=current_tenant().tenant_id,
            time=time.time(),
            data=data,
        )
        await self._outbox.append_durable(event)


@dataclass
class HostedModule:
    name: str
    plugin: LoadedPlugin
    module: Module | None = None
    context: ModuleContext | None = None
    state: ModuleState = ModuleState.LOADED
    error: str | None = None
    handled: int = 0
    handler_errors: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class ModuleHost:
    def __init__(self, outbox: SqliteOutbox, tenants: Sequence[TenantContext], gateway_id: str) -> None:
        self._outbox = outbox
        self._tenants = tuple(tenants)
        self._gateway_id = gateway_id
        self.modules: dict[str, HostedModule] = {}
        self._wake: dict[tuple[str, str], asyncio.Event] = {}
        outbox.add_commit_listener(self._on_commit)

    def _on_commit(self, events: Sequence[Any], last_position: int) -> None:
        tenants = {e.tenant for e in events}
        for (_, tenant), wake in self._wake.items():
            if tenant in tenants:
                wake.set()

    async def start(self, name: str, plugin: LoadedPlugin, config: dict[str, Any]) -> HostedModule:
        hosted = HostedModule(name, plugin)
        self.modules[name] = hosted
        entitled = [t for t in self._tenants if t.entitled(plugin.manifest.entitlement)]
        try:
            module = plugin.obj()
            if not isinstance(module, Module):
                raise TypeError("does not implement on_init/on_enable/on_disable/on_health_check")
            context = ModuleContext(name, config, entitled, self._outbox, self._gateway_id)
            await module.on_init(context)
            await module.on_enable()
        except Exception as exc:  # a module's failure is its own: report it by name, keep the gateway up
            hosted.state, hosted.error = ModuleState.FAILED, f"{type(exc).__name__}: {exc}"
            log.error("module %s failed to start: %s", name, hosted.error)
            return hosted
        hosted.module, hosted.context, hosted.state = module, context, ModuleState.ENABLED
        for tenant in entitled:
            for index, subscription in enumerate(context.subscriptions):
                wake = self._wake.setdefault((f"{name}:{index}", tenant.tenant_id), asyncio.Event())
                hosted.tasks.append(
                    asyncio.create_task(
                        self._consume(hosted, tenant, index, subscription, wake), name=f"module-{name}"
                    )
                )
        log.info(
            "module %s %s enabled for tenants %s",
            name,
            plugin.manifest.version,
            [t.tenant_id for t in entitled],
        )
        return hosted

    async def _consume(
        self, hosted: HostedModule, tenant: TenantContext, index: int, sub: _Subscription, wake: asyncio.Event
    ) -> None:
        consumer = f"module:{hosted.name}:{index}"
        with tenant_scope(tenant):
            position = await self._outbox.cursor(consumer)
            while True:
                rows = await self._outbox.read_after(position, 200, sub.types)
                if not rows:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), 1.0)
                    continue
                for row in rows:
                    try:
                        await sub.handler(row)
                        hosted.handled += 1
                    except Exception as exc:  # counted and logged; the event is not redelivered forever
                        hosted.handler_errors += 1
                        log.error("module %s failed on event %s: %s", hosted.name, row.id, exc)
                    position = row.position
                self._outbox.set_cursor(consumer, position)

    async def health(self) -> dict[str, Health]:
        out: dict[str, Health] = {}
        for name, hosted in self.modules.items():
            if hosted.module is None or hosted.state is not ModuleState.ENABLED:
                out[name] = Health(False, hosted.error or hosted.state.value)
                continue
            try:
                out[name] = await asyncio.wait_for(hosted.module.on_health_check(), 5.0)
            except Exception as exc:
                out[name] = Health(False, f"health check failed: {exc}")
        return out

    async def stop(self) -> None:
        for hosted in self.modules.values():
            for task in hosted.tasks:
                task.cancel()
            for task in hosted.tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if hosted.module is not None and hosted.state is ModuleState.ENABLED:
                try:
                    await hosted.module.on_disable()
                except Exception as exc:
                    log.error("module %s failed to disable: %s", hosted.name, exc)
                hosted.state = ModuleState.DISABLED
