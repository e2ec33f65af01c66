"""Modules: domain logic as plug-ins, hosted by the kernel.

A module implements four hooks (`on_init`, `on_enable`, `on_disable`, `on_health_check`) and sees only its
`ModuleContext`: its config, the tenants entitled to it, and a handle to subscribe to and publish events.
A tenant without the module's entitlement flag gets none of its events routed there. The host owns each
module's state; a module that raises is reported by name and the others go on.

Two kinds of subscription, each a durable consumer per entitled tenant, so a module that was down
resumes where it stopped, and each holding the tenant's events until it has passed them:

- `subscribe(types, handler)`: one event at a time (`module:<name>:<n>` consumer), read from the host's
  `EventFeed` (edge.module_host.feed: the outbox, or JetStream with the NATS bus). A handler that raises is
  logged and counted; the event is not offered again.
- `subscribe_batches(types, handler, ...)`: a list of events of one tenant in outbox order
  (`module:<name>:<subscription name>` cursor), for store-and-forward uplinks. The handler's outcome decides
  the cursor: it returns normally (all acknowledged), returns `Rejected({position: reason})` (those go to the
  dead-letter table with the reason, the rest are acknowledged), or raises `RetryLater(after)` (nothing is
  acknowledged; the same events are offered again after `after` seconds, or after the kernel's capped
  exponential backoff when `after` is None). Any other exception is treated like `RetryLater(None)` and
  logged: a bug never loses events. Dead letters an operator asked to replay are offered to the handler again.

Concurrency and fairness: the host runs one batch consumer task per tenant, concurrently, and never has more
than one batch of a tenant in the handler, so per-device order holds across retries and restarts. Sharing
an uplink fairly between tenants is the module's business (cloud_sync gates its uploads with a weighted-fair
scheduler and token buckets); the kernel only guarantees one tenant never waits on another's handler call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from edge.module_host.batches import BatchConsumer
from edge.module_host.context import InProcessContext, Registrations, Subscription
from edge.module_host.feed import EventFeed, OutboxFeed
from edge.module_host.tenants import EntitlementListener, Tenants
from edge.module_host.versions import VersionGate
from edge.outbox import OutboxStore
from edge.plugins import LoadedPlugin
from edge.sdk.modules import (
    Health,
    Module,
    PointWriter,
    module_consumer,
)
from edge.sdk.store import ModuleStore, StateStore, module_store_path
from edge.sdk.tenancy import TenantContext, tenant_scope
from edge.sdk.ticks import TenantTicks

log = logging.getLogger(__name__)


class ModuleState(StrEnum):
    LOADED = "loaded"
    ENABLED = "enabled"
    DISABLED = "disabled"
    FAILED = "failed"


@dataclass
class HostedModule:
    name: str
    plugin: LoadedPlugin
    module: Module | None = None
    context: InProcessContext | None = None
    state: ModuleState = ModuleState.LOADED
    error: str | None = None
    handled: int = 0
    handler_errors: int = 0
    retries: int = 0
    dead_lettered: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    tenant_tasks: dict[str, list[asyncio.Task[None]]] = field(default_factory=dict)
    gate: VersionGate | None = None
    registrations: Registrations = field(default_factory=Registrations)  # what it subscribed to, its ticks
    ticks: TenantTicks | None = None  # its `every` tasks per tenant, while enabled (in-process only)

    def count_error(self) -> None:
        self.handler_errors += 1


class ModuleTime(Protocol):
    """Each tenant's module handler time (edge.ops.quotas.Quotas): charged after a batch, waited out before."""

    async def module_turn(self, tenant: str) -> None: ...
    def module_spent(self, tenant: str, seconds: float) -> None: ...


class ModuleHost:
    """Starts, routes to and stops in-process modules; isolated ones are attached by `edge.sidecar`."""

    def __init__(
        self,
        outbox: OutboxStore,
        tenants: Tenants | Sequence[TenantContext],
        gateway_id: str,
        data_dir: Path,
        stores: Callable[[str], StateStore] | None = None,
        feed: EventFeed | None = None,
        quotas: ModuleTime | None = None,
    ) -> None:
        """`stores`: an in-process module's state by module name (the configured backend,
        `edge.outbox.backends.module_store`); None: a SQLite file per module in `data_dir`."""
        self._outbox = outbox
        self._quotas = quotas  # each tenant's module handler time (edge.ops.quotas)
        # where `subscribe` handlers read (edge.module_host.feed)
        self._feed: EventFeed = feed or OutboxFeed(outbox)
        # the gateway's registry (shared with its control and API), or a registry of its own for these tenants
        self._tenants = tenants if isinstance(tenants, Tenants) else Tenants(tenants)
        self._gateway_id = gateway_id
        self._data_dir = data_dir
        self._stores = stores or (lambda name: ModuleStore(module_store_path(data_dir, name), name))
        self.point_writer: PointWriter | None = None  # set by the gateway once its pollers exist
        self.modules: dict[str, HostedModule] = {}
        # cluster mode on a shared outbox: a tenant's consumers and ticks run on its leader only
        self.runs_here: Callable[[str], bool] = lambda tenant: True
        self._lead_listeners: list[Callable[[str], None]] = []  # isolated modules follow leadership too
        self._tenants.listen(self._entitlements_changed)  # first: in-process routing follows at once

    @property
    def outbox(self) -> OutboxStore:
        return self._outbox

    @property
    def tenants(self) -> Tenants:
        """The tenants and their entitlements as of now; `tenants.set_entitlements` changes them live."""
        return self._tenants

    @property
    def gateway_id(self) -> str:
        return self._gateway_id

    def entitled(self, entitlement: str | None) -> list[TenantContext]:
        """The tenants whose events a module needing `entitlement` may see, as of now."""
        return self._tenants.entitled(entitlement)

    def on_entitlements_changed(self, listener: EntitlementListener) -> None:
        """Call `listener(old, new)` when a tenant's entitlements change, after this host re-routed its
        in-process modules (isolated modules re-route there)."""
        self._tenants.listen(listener)

    async def start(self, name: str, plugin: LoadedPlugin, config: dict[str, Any]) -> HostedModule:
        hosted = HostedModule(name, plugin)
        self.modules[name] = hosted
        entitled = self.entitled(plugin.manifest.entitlement)
        store = self._stores(name)
        try:
            module = plugin.obj()
            if not isinstance(module, Module):
                raise TypeError("does not implement on_init/on_enable/on_disable/on_health_check")
            context = InProcessContext(
                name,
                config,
                entitled,
                self._outbox,
                self._gateway_id,
                store,
                self.point_writer,
                plugin.manifest.produces,
                hosted.registrations,
            )
            await store.open()
            await module.on_init(context)
            await module.on_enable()
        except Exception as exc:  # a module's failure is its own: report it by name, keep the gateway up
            hosted.state, hosted.error = ModuleState.FAILED, f"{type(exc).__name__}: {exc}"
            await store.close()
            log.error("module %s failed to start: %s", name, hosted.error)
            return hosted
        hosted.module, hosted.context, hosted.state = module, context, ModuleState.ENABLED
        hosted.gate = VersionGate(name, plugin.manifest.consumes)
        hosted.ticks = TenantTicks(name, hosted.registrations.ticks, hosted.count_error)
        for tenant in entitled:
            if self.runs_here(tenant.tenant_id):
                self._attach(hosted, tenant)
        log.info(
            "module %s %s enabled for tenants %s",
            name,
            plugin.manifest.version,
            [t.tenant_id for t in entitled],
        )
        return hosted

    def _attach(self, hosted: HostedModule, tenant: TenantContext) -> None:
        """Start the module's consumers and ticks of one tenant (its durable cursors say where they resume)."""
        context = hosted.context
        assert context is not None
        registered = hosted.registrations
        tasks = hosted.tenant_tasks.setdefault(tenant.tenant_id, [])
        for index, subscription in enumerate(registered.subscriptions):
            consumer = module_consumer(hosted.name, str(index))
            self._feed.hold(consumer, tenant.tenant_id)
            tasks.append(
                asyncio.create_task(
                    self._consume(hosted, tenant, consumer, subscription), name=f"module-{hosted.name}"
                )
            )
        for batches in registered.batch_subscriptions:
            if batches.tenants is not None and tenant.tenant_id not in batches.tenants:
                continue
            consumer = module_consumer(hosted.name, batches.name)
            self._outbox.hold(consumer, [tenant.tenant_id])
            consumer_task = BatchConsumer(self._outbox, hosted, tenant, consumer, batches)
            tasks.append(
                asyncio.create_task(consumer_task.run(), name=f"module-{hosted.name}-{tenant.tenant_id}")
            )
        hosted.tasks.extend(tasks)
        if hosted.ticks is not None:
            hosted.ticks.start(tenant)
        context.tenants = tuple(self.entitled(hosted.plugin.manifest.entitlement))

    async def _detach(self, hosted: HostedModule, tenant_id: str) -> None:
        tasks = hosted.tenant_tasks.pop(tenant_id, [])
        await _cancel(tasks)
        hosted.tasks = [t for t in hosted.tasks if t not in tasks]
        if hosted.ticks is not None:
            await hosted.ticks.stop(tenant_id)
        context = hosted.context
        if context is not None:
            for consumer in self._subscription_consumers(hosted):  # its rows no longer wait for this module
                self._feed.release(consumer, tenant_id)
            for consumer in self._batch_consumers(hosted):
                self._outbox.release(consumer, [tenant_id])
            context.tenants = tuple(self.entitled(hosted.plugin.manifest.entitlement))

    async def _entitlements_changed(self, old: TenantContext, new: TenantContext) -> None:
        """A tenant's entitlements changed (edge.module_host.tenants): modules it gains start receiving its
        events from now on (not its history) and ticking for it, modules it loses stop at once."""
        for hosted in self.modules.values():
            flag = hosted.plugin.manifest.entitlement
            was, now = old.entitled(flag), new.entitled(flag)
            if was == now or hosted.state is not ModuleState.ENABLED or hosted.context is None:
                continue
            if now and not self.runs_here(new.tenant_id):
                continue  # its leader attaches it
            if now:
                for consumer in self._subscription_consumers(hosted):  # from now on, not its history
                    await self._feed.start_from_now(consumer, new)
                with tenant_scope(new):
                    for consumer in self._batch_consumers(hosted):
                        self._outbox.set_cursor(consumer, self._outbox.last_position)
                self._attach(hosted, new)
                log.info("module %s now receives tenant %s's events", hosted.name, new.tenant_id)
            else:
                await self._detach(hosted, new.tenant_id)
                log.info("module %s no longer receives tenant %s's events", hosted.name, new.tenant_id)

    def on_leadership_changed(self, listener: Callable[[str], None]) -> None:
        """Call `listener(tenant)` after this instance became, or stopped being, the tenant's leader (cluster
        mode; `runs_here` says which), once in-process modules followed."""
        self._lead_listeners.append(listener)

    async def lead(self, tenant_id: str, leading: bool) -> None:
        """Cluster mode: this instance became (or stopped being) the tenant's leader; its modules' consumers
        and ticks start (from their durable cursors) or stop here. `runs_here` already says the new state."""
        await self._lead_in_process(tenant_id, leading)
        for listener in self._lead_listeners:
            listener(tenant_id)

    async def _lead_in_process(self, tenant_id: str, leading: bool) -> None:
        tenant = self._tenants[tenant_id]
        for hosted in self.modules.values():
            if hosted.state is not ModuleState.ENABLED or hosted.context is None:
                continue
            if not tenant.entitled(hosted.plugin.manifest.entitlement):
                continue
            attached = tenant_id in hosted.tenant_tasks
            if leading and not attached:
                self._attach(hosted, tenant)
            elif not leading and attached:
                await self._detach(hosted, tenant_id)

    def _subscription_consumers(self, hosted: HostedModule) -> list[str]:
        return [module_consumer(hosted.name, str(i)) for i in range(len(hosted.registrations.subscriptions))]

    def _batch_consumers(self, hosted: HostedModule) -> list[str]:
        return [module_consumer(hosted.name, b.name) for b in hosted.registrations.batch_subscriptions]

    async def _consume(
        self, hosted: HostedModule, tenant: TenantContext, consumer: str, sub: Subscription
    ) -> None:
        gate = hosted.gate or VersionGate(hosted.name, ())
        events = self._feed.open(tenant, consumer, sub.types, 200)
        with tenant_scope(tenant):
            async with events:
                async for batch in events:
                    if self._quotas is not None:  # over its handler time, the tenant waits, not the others
                        await self._quotas.module_turn(tenant.tenant_id)
                    started = time.perf_counter()
                    for row in batch.events:
                        event = gate.admit(row)
                        if event is None:  # a version the module does not handle: counted by the gate
                            continue
                        try:
                            await sub.handler(event)
                            hosted.handled += 1
                        except Exception as exc:  # counted and logged; the event is not redelivered forever
                            hosted.handler_errors += 1
                            log.error("module %s failed on event %s: %s", hosted.name, row.id, exc)
                    if self._quotas is not None:
                        self._quotas.module_spent(tenant.tenant_id, time.perf_counter() - started)
                    events.ack(batch)

    def serves(self, tenant: str, module: str) -> str | None:
        """None when `module` runs for `tenant` (for module commands), else the reason it does not."""
        hosted = self.modules.get(module)
        if hosted is None or hosted.context is None or hosted.state is not ModuleState.ENABLED:
            return f"module {module!r} is not running on this gateway"
        if tenant not in {t.tenant_id for t in hosted.context.tenants}:
            return f"tenant is not entitled to module {module!r}"
        return None

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

    async def stop_module(self, name: str) -> None:
        """Stop one module's consumers and call its `on_disable`; its cursors stay where they are."""
        hosted = self.modules.get(name)
        if hosted is None:
            return
        await _cancel(hosted.tasks)
        hosted.tasks, hosted.tenant_tasks = [], {}
        if hosted.ticks is not None:
            await hosted.ticks.close()
        if hosted.module is not None and hosted.state is ModuleState.ENABLED:
            try:
                await hosted.module.on_disable()
            except Exception as exc:
                log.error("module %s failed to disable: %s", hosted.name, exc)
            hosted.state = ModuleState.DISABLED
        if hosted.context is not None:
            await hosted.context.store.close()  # its file and connection, and any call still queued

    async def stop(self) -> None:
        for name in list(self.modules):
            await self.stop_module(name)


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
