"""Modules: domain logic as plug-ins, hosted by the kernel.

A module implements four hooks (`on_init`, `on_enable`, `on_disable`, `on_health_check`) and sees only its
`ModuleContext`: its config, the tenants entitled to it, and a handle to subscribe to and publish events.
A tenant without the module's entitlement flag gets none of its events routed there. The host owns each
module's state; a module that raises is reported by name and the others go on.

Two kinds of subscription, each a durable outbox consumer per entitled tenant, so a module that was down
resumes where it stopped, and each holding the tenant's rows in the outbox until it has passed them:

- `subscribe(types, handler)`: one event at a time (`module:<name>:<n>` cursor). A handler that raises is
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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from edge.backoff import Backoff
from edge.contracts import load_schema
from edge.events import make_event
from edge.module_store import ModuleStore, module_store_path
from edge.plugins import LoadedPlugin, Produces
from edge.storage import StoredEvent
from edge.storage.sqlite import SqliteOutbox
from edge.tenancy import TenantContext, current_tenant, tenant_scope
from edge.versions import VersionGate

log = logging.getLogger(__name__)

EventHandler = Callable[[StoredEvent], Awaitable[None]]
# (module, site, device, point, value) -> None for the current tenant, through the kernel's command path;
# raises edge.errors.DeviceError (or UnknownTarget) with the reason when the write is refused or fails
PointWriter = Callable[[str, str, str, str, Any], Awaitable[None]]

RETRY_BASE = 1.0  # seconds: the kernel's backoff for RetryLater(None), capped (reliability T04)
RETRY_CAP = 60.0
_REPLAY_CHECK = 2.0  # seconds between looks for dead letters an operator asked to replay


@dataclass(frozen=True)
class Rejected:
    """A batch handler's verdict: these events (by outbox position) are bad; the others are delivered."""

    reasons: Mapping[int, str]


class RetryLater(Exception):
    """Nothing of the batch was delivered: offer the same events again after `after` seconds (or backoff)."""

    def __init__(self, after: float | None = None, reason: str = "") -> None:
        self.after = after
        self.reason = reason
        super().__init__(reason or "retry later")


BatchHandler = Callable[[Sequence[StoredEvent]], Awaitable[Rejected | None]]


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


@dataclass
class _BatchSubscription:
    name: str
    types: tuple[str, ...]
    handler: BatchHandler
    max_batch: int
    max_wait: float
    max_bytes: int | None
    tenants: frozenset[str] | None


class ModuleContext:
    """Everything a module may touch: the kernel's public API for plug-ins."""

    def __init__(
        self,
        name: str,
        config: dict[str, Any],
        tenants: Sequence[TenantContext],
        outbox: SqliteOutbox,
        gateway_id: str,
        store: ModuleStore | None = None,
        point_writer: PointWriter | None = None,
        produces: Sequence[Produces] = (),
    ) -> None:
        self.name = name
        self.config = config
        self.tenants = tuple(tenants)
        self.gateway_id = gateway_id
        # the module's own tenant-scoped storage (edge.module_store), opened and closed by the host
        self.store = store or ModuleStore(module_store_path(outbox.path.parent, name), name)
        self._point_writer = point_writer
        self.log = logging.getLogger(f"edge.module.{name}")
        self._outbox = outbox
        self._source = f"/{gateway_id}/modules/{name}"
        self.subscriptions: list[_Subscription] = []
        self.batch_subscriptions: list[_BatchSubscription] = []
        self._produces = {p.type: p for p in produces}

    def subscribe(self, types: Sequence[str], handler: EventHandler) -> None:
        """Receive committed events of these types, per entitled tenant, in outbox order, at least once."""
        self.subscriptions.append(_Subscription(tuple(types), handler))

    def subscribe_batches(
        self,
        types: Sequence[str] | None,
        handler: BatchHandler,
        *,
        max_batch: int = 1000,
        max_wait: float = 0.5,
        max_bytes: int | None = None,
        name: str = "batches",
        tenants: Sequence[str] | None = None,
    ) -> None:
        """Receive committed events (of these types, or all when None) in batches of one tenant, in outbox
        order, at least once; the handler's outcome decides what is acknowledged (see the module docs).

        A batch is offered once it holds `max_batch` events (or `max_bytes` of bodies), or `max_wait`
        seconds after its first event was seen. `tenants` limits the subscription to some of the entitled
        tenants. The cursor is `module:<module>:<name>`, so keep `name` stable.
        """
        if max_batch < 1 or max_wait < 0:
            raise ValueError("max_batch must be >= 1 and max_wait >= 0")
        self.batch_subscriptions.append(
            _BatchSubscription(
                name,
                tuple(types or ()),
                handler,
                max_batch,
                max_wait,
                max_bytes,
                frozenset(tenants) if tenants is not None else None,
            )
        )

    def consumer_name(self, subscription: str) -> str:
        """The outbox consumer (cursor) name of one of this module's batch subscriptions."""
        return f"module:{self.name}:{subscription}"

    async def write_point(self, site: str, device: str, point: str, value: Any) -> None:
        """Write a point of the current tenant's device through the kernel's command path (the same checks
        and result events as an MQTT write request). Raises DeviceError/UnknownTarget with the reason."""
        if self._point_writer is None:
            raise RuntimeError(f"module {self.name}: this host has no write path to devices")
        await self._point_writer(self.name, site, device, point, value)

    async def publish(self, type: str, subject: str, data: dict[str, Any]) -> str:
        """Publish an event for the current tenant (the one whose event is being handled); returns its id. Raises
        `edge.storage.OutboxFull` when the tenant's quota is full under the `refuse_newest` policy.

        A type the manifest declares under `[[produces]]` is stamped with its version and its data checked
        against its schema (ValueError naming the module and type when it does not match)."""
        declared = self._produces.get(type)
        if declared is not None and declared.schema is not None:
            try:
                load_schema(declared.schema).model_validate(data)
            except ValueError as exc:
                raise ValueError(
                    f"module {self.name}: {type} data does not match {declared.schema}: {exc}"
                ) from exc
        event = make_event(
            type=type,
            source=self._source,
            subject=subject,
            tenant=current_tenant().tenant_id,
            time=time.time(),
            data=data,
            dataversion=declared.version if declared is not None else None,
        )
        await self._outbox.append_durable(event)
        return event.id


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
    retries: int = 0
    dead_lettered: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    tenant_tasks: dict[str, list[asyncio.Task[None]]] = field(default_factory=dict)
    gate: VersionGate | None = None


class ModuleHost:
    """Starts, routes to and stops in-process modules; isolated ones are attached by `edge.sidecar`."""

    def __init__(
        self,
        outbox: SqliteOutbox,
        tenants: Sequence[TenantContext],
        gateway_id: str,
        data_dir: Path | None = None,
    ) -> None:
        self._outbox = outbox
        self._tenants = {t.tenant_id: t for t in tenants}
        self._gateway_id = gateway_id
        self._data_dir = data_dir or outbox.path.parent
        self.point_writer: PointWriter | None = None  # set by the gateway once its pollers exist
        self.modules: dict[str, HostedModule] = {}
        self._wake: dict[tuple[str, str], asyncio.Event] = {}
        self._entitlement_listeners: list[Callable[[TenantContext, TenantContext], None]] = []
        outbox.add_commit_listener(self._on_commit)

    @property
    def outbox(self) -> SqliteOutbox:
        return self._outbox

    @property
    def gateway_id(self) -> str:
        return self._gateway_id

    def _on_commit(self, events: Sequence[Any], last_position: int) -> None:
        tenants = {e.tenant for e in events}
        for (_, tenant), wake in self._wake.items():
            if tenant in tenants:
                wake.set()

    def wake(self, consumer: str, tenant: str) -> asyncio.Event:
        """The flag a consumer of this tenant waits on; set by every commit of the tenant's events."""
        return self._wake.setdefault((consumer, tenant), asyncio.Event())

    def entitled(self, entitlement: str | None) -> list[TenantContext]:
        """The tenants whose events a module needing `entitlement` may see, as of now."""
        return [t for t in self._tenants.values() if t.entitled(entitlement)]

    def on_entitlements_changed(self, listener: Callable[[TenantContext, TenantContext], None]) -> None:
        """Call `listener(old, new)` when a tenant's entitlements change (isolated modules re-route)."""
        self._entitlement_listeners.append(listener)

    async def start(self, name: str, plugin: LoadedPlugin, config: dict[str, Any]) -> HostedModule:
        hosted = HostedModule(name, plugin)
        self.modules[name] = hosted
        entitled = self.entitled(plugin.manifest.entitlement)
        store = ModuleStore(module_store_path(self._data_dir, name), name)
        try:
            module = plugin.obj()
            if not isinstance(module, Module):
                raise TypeError("does not implement on_init/on_enable/on_disable/on_health_check")
            context = ModuleContext(
                name,
                config,
                entitled,
                self._outbox,
                self._gateway_id,
                store,
                self.point_writer,
                plugin.manifest.produces,
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
        for tenant in entitled:
            self._attach(hosted, tenant)
        log.info(
            "module %s %s enabled for tenants %s",
            name,
            plugin.manifest.version,
            [t.tenant_id for t in entitled],
        )
        return hosted

    def _attach(self, hosted: HostedModule, tenant: TenantContext) -> None:
        """Start the module's consumers of one tenant (its durable cursors say where they resume)."""
        context = hosted.context
        assert context is not None
        tasks = hosted.tenant_tasks.setdefault(tenant.tenant_id, [])
        for index, subscription in enumerate(context.subscriptions):
            consumer = f"module:{hosted.name}:{index}"
            self._outbox.hold(consumer, [tenant.tenant_id])
            wake = self.wake(consumer, tenant.tenant_id)
            tasks.append(
                asyncio.create_task(
                    self._consume(hosted, tenant, consumer, subscription, wake), name=f"module-{hosted.name}"
                )
            )
        for batches in context.batch_subscriptions:
            if batches.tenants is not None and tenant.tenant_id not in batches.tenants:
                continue
            consumer = context.consumer_name(batches.name)
            self._outbox.hold(consumer, [tenant.tenant_id])
            wake = self.wake(consumer, tenant.tenant_id)
            consumer_task = _BatchConsumer(self._outbox, hosted, tenant, consumer, batches, wake)
            tasks.append(
                asyncio.create_task(consumer_task.run(), name=f"module-{hosted.name}-{tenant.tenant_id}")
            )
        hosted.tasks.extend(tasks)
        context.tenants = tuple(self.entitled(hosted.plugin.manifest.entitlement))

    async def _detach(self, hosted: HostedModule, tenant_id: str) -> None:
        tasks = hosted.tenant_tasks.pop(tenant_id, [])
        await _cancel(tasks)
        hosted.tasks = [t for t in hosted.tasks if t not in tasks]
        context = hosted.context
        if context is not None:
            consumers = [f"module:{hosted.name}:{i}" for i in range(len(context.subscriptions))]
            consumers += [context.consumer_name(b.name) for b in context.batch_subscriptions]
            for consumer in consumers:  # the revoked tenant's rows no longer wait for this module
                self._outbox.release(consumer, [tenant_id])
            context.tenants = tuple(self.entitled(hosted.plugin.manifest.entitlement))

    async def set_entitlements(self, tenant_id: str, flags: Iterable[str]) -> None:
        """Change a tenant's entitlement flags live: modules it gains start receiving its events from now
        on (not its history), modules it loses stop at once. Logged; raises KeyError for an unknown tenant."""
        old = self._tenants[tenant_id]
        new = replace(old, entitlements=frozenset(flags))
        if new.entitlements == old.entitlements:
            return
        self._tenants[tenant_id] = new
        log.info(
            "tenant %s entitlements changed: %s -> %s",
            tenant_id,
            sorted(old.entitlements),
            sorted(new.entitlements),
        )
        for hosted in self.modules.values():
            flag = hosted.plugin.manifest.entitlement
            was, now = old.entitled(flag), new.entitled(flag)
            if was == now or hosted.state is not ModuleState.ENABLED or hosted.context is None:
                continue
            if now:
                with tenant_scope(new):
                    for consumer in self._consumers(hosted):  # from now on, not the tenant's history
                        self._outbox.set_cursor(consumer, self._outbox.last_position)
                self._attach(hosted, new)
                log.info("module %s now receives tenant %s's events", hosted.name, tenant_id)
            else:
                await self._detach(hosted, tenant_id)
                log.info("module %s no longer receives tenant %s's events", hosted.name, tenant_id)
        for listener in self._entitlement_listeners:
            listener(old, new)

    def _consumers(self, hosted: HostedModule) -> list[str]:
        context = hosted.context
        assert context is not None
        names = [f"module:{hosted.name}:{i}" for i in range(len(context.subscriptions))]
        return names + [context.consumer_name(b.name) for b in context.batch_subscriptions]

    async def _consume(
        self,
        hosted: HostedModule,
        tenant: TenantContext,
        consumer: str,
        sub: _Subscription,
        wake: asyncio.Event,
    ) -> None:
        gate = hosted.gate or VersionGate(hosted.name, ())
        with tenant_scope(tenant):
            position = await self._outbox.cursor(consumer)
            while True:
                scanned = self._outbox.last_position  # committed before the read: the read sees it all
                wake.clear()  # before the read: a commit landing during it must wake the next wait
                rows = await self._outbox.read_after(position, 200, sub.types)
                if len(rows) < 200 and scanned > position and (not rows or rows[-1].position < scanned):
                    # nothing else of our types up to `scanned`: pass the rest, so retention can free it
                    tail = scanned
                else:
                    tail = 0
                if not rows:
                    if tail:
                        position = tail
                        self._outbox.set_cursor(consumer, position)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), 1.0)
                    continue
                for row in rows:
                    position = row.position
                    event = gate.admit(row)
                    if event is None:  # a version the module does not handle: counted by the gate
                        continue
                    try:
                        await sub.handler(event)
                        hosted.handled += 1
                    except Exception as exc:  # counted and logged; the event is not redelivered forever
                        hosted.handler_errors += 1
                        log.error("module %s failed on event %s: %s", hosted.name, row.id, exc)
                position = max(position, tail)
                self._outbox.set_cursor(consumer, position)

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
        if hosted.module is not None and hosted.state is ModuleState.ENABLED:
            try:
                await hosted.module.on_disable()
            except Exception as exc:
                log.error("module %s failed to disable: %s", hosted.name, exc)
            hosted.state = ModuleState.DISABLED
        if hosted.context is not None:
            await hosted.context.store.close()  # an open aiosqlite thread would keep the process alive

    async def stop(self) -> None:
        for name in list(self.modules):
            await self.stop_module(name)


class ConsumerCounters(Protocol):
    """What a batch consumer counts as it goes (a `HostedModule`, or a webhook subscription's stats)."""

    name: str
    handled: int
    handler_errors: int
    retries: int
    dead_lettered: int

    @property
    def gate(self) -> VersionGate | None:
        """The data versions the consumer takes (None: every version, as stored)."""
        ...


async def run_batch_consumer(
    outbox: SqliteOutbox,
    counters: ConsumerCounters,
    tenant: TenantContext,
    consumer: str,
    types: Sequence[str] | None,
    handler: BatchHandler,
    wake: asyncio.Event,
    *,
    max_batch: int = 100,
    max_wait: float = 0.0,
) -> None:
    """Run one durable batch consumer outside a module (kernel services such as webhooks), with the same
    cursor, retry, dead-letter and replay rules as `ModuleContext.subscribe_batches`. `wake` must be set
    whenever the tenant commits events. Runs until cancelled."""
    sub = _BatchSubscription(consumer, tuple(types or ()), handler, max_batch, max_wait, None, None)
    await _BatchConsumer(outbox, counters, tenant, consumer, sub, wake).run()


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _BatchConsumer:
    """One tenant's batch subscription: fill a batch, offer it, act on the outcome, repeat."""

    def __init__(
        self,
        outbox: SqliteOutbox,
        hosted: ConsumerCounters,
        tenant: TenantContext,
        consumer: str,
        sub: _BatchSubscription,
        wake: asyncio.Event,
    ) -> None:
        self._outbox = outbox
        self._hosted = hosted
        self._tenant = tenant
        self._consumer = consumer
        self._sub = sub
        self._wake = wake
        self._backoff = Backoff(RETRY_BASE, RETRY_CAP)
        self._failing = False
        self._retries = 0
        self._next_replay_check = 0.0

    async def run(self) -> None:
        ahead: asyncio.Task[tuple[list[StoredEvent], int]] | None = None
        with tenant_scope(self._tenant):
            position = await self._outbox.cursor(self._consumer)
            try:
                while True:
                    await self._replay_dead_letters()
                    if ahead is not None:
                        batch, passed = await ahead
                        ahead = None
                    else:
                        batch, passed = await self._fill(position)
                    if not batch:
                        if passed > position:  # nothing for us up to `passed`: move on, retention may free it
                            position = passed
                            self._outbox.set_cursor(self._consumer, position)
                        await self._sleep_until_woken(1.0)
                        continue
                    if len(batch) >= self._sub.max_batch:  # a backlog: read the next batch during this one
                        ahead = asyncio.create_task(self._fill(batch[-1].position))
                    retries = self._retries
                    position = max(await self._deliver(batch, position), passed)
                    self._outbox.set_cursor(self._consumer, position)
                    if ahead is not None and self._retries != retries:
                        ahead.cancel()  # read before a long wait: retention may have removed rows since
                        ahead = None
            finally:
                if ahead is not None:
                    ahead.cancel()

    async def _fill(self, position: int) -> tuple[list[StoredEvent], int]:
        """Read up to `max_batch` events after `position`, lingering up to `max_wait` for a full batch.

        Returns the batch and the position up to which every row was examined (rows of other types passed)."""
        sub, outbox = self._sub, self._outbox
        batch: list[StoredEvent] = []
        size, passed, after = 0, position, position
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            scanned = outbox.last_position  # committed before the read, so the read sees all of it
            want = sub.max_batch - len(batch)
            self._wake.clear()  # before the read: a commit landing during it must wake the next wait
            rows = await outbox.read_after(after, want, sub.types)
            for row in rows:
                if batch and sub.max_bytes is not None and size + len(row.body) > sub.max_bytes:
                    return batch, batch[-1].position  # full by bytes: the rest waits for the next batch
                batch.append(row)
                size += len(row.body)
            if rows:
                after = rows[-1].position
            passed = max(after, scanned) if len(rows) < want else after
            if len(batch) >= sub.max_batch or not batch:
                return batch, passed
            if deadline is None:
                deadline = loop.time() + sub.max_wait
            remaining = deadline - loop.time()
            if remaining <= 0:
                return batch, passed
            await self._sleep_until_woken(remaining)

    async def _sleep_until_woken(self, seconds: float) -> None:
        """Wait for a commit; the flag was cleared before the last read, so none is missed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _deliver(self, batch: list[StoredEvent], position: int) -> int:
        """Offer the batch until the handler accepts it (wholly or with rejections); returns the new cursor."""
        while True:
            outcome = await self._offer(batch)
            if not isinstance(outcome, _Retry):
                rejected = outcome.reasons if isinstance(outcome, Rejected) else {}
                await self._settle(batch, rejected)
                return batch[-1].position
            # the same events again, minus any that retention removed meanwhile
            last = batch[-1].position
            rows = await self._outbox.read_after(position, len(batch), self._sub.types)
            batch = [r for r in rows if r.position <= last]
            if not batch:
                return last

    async def _offer(self, batch: Sequence[StoredEvent]) -> Rejected | _Retry | None:
        """One handler call; returns its verdict, or `_RETRY` after waiting as it (or the backoff) asked."""
        hosted = self._hosted
        gate = hosted.gate
        if gate is not None:
            admitted = [e for e in (gate.admit(row) for row in batch) if e is not None]
            if not admitted:
                return None  # nothing of a version the module handles: passed, counted by the gate
            batch = admitted
        try:
            outcome = await self._sub.handler(batch)
        except RetryLater as retry:
            delay = retry.after if retry.after is not None else self._backoff.next_delay()
            reason = retry.reason or "retry later"
        except Exception as exc:  # a bug in the handler: log it, keep the events, try again later
            hosted.handler_errors += 1
            delay, reason = self._backoff.next_delay(), f"handler error: {type(exc).__name__}: {exc}"
            if not self._failing:
                log.exception("module %s failed on a batch of %d events", hosted.name, len(batch))
        else:
            if self._failing:
                log.info("module %s delivers again (%s)", hosted.name, self._consumer)
            self._failing = False
            self._backoff.reset()
            return outcome
        hosted.retries += 1
        self._retries += 1
        self._outbox.record_failure(self._consumer, reason)
        if not self._failing:
            log.warning(
                "module %s: batch of %d not delivered (%s); retrying", hosted.name, len(batch), reason
            )
        self._failing = True
        await asyncio.sleep(max(0.0, delay))
        return _RETRY

    async def _settle(self, batch: Sequence[StoredEvent], rejected: Mapping[int, str]) -> None:
        by_position = {row.position: row for row in batch}
        dead = [(by_position[p], why) for p, why in rejected.items() if p in by_position]
        if len(dead) < len(rejected):
            log.warning("module %s rejected positions outside its batch; ignored", self._hosted.name)
        if dead:
            await self._outbox.dead_letter(self._consumer, dead)
            self._hosted.dead_lettered += len(dead)
            log.warning(
                "module %s refused %d events (first: %s: %s); kept as dead letters",
                self._hosted.name,
                len(dead),
                dead[0][0].id,
                dead[0][1],
            )
        self._hosted.handled += len(batch) - len(dead)
        self._outbox.record_success(self._consumer, len(batch) - len(dead))

    async def _replay_dead_letters(self) -> None:
        """Offer again what an operator asked to replay (`edge sync replay-dead-letters`)."""
        now = time.monotonic()
        if now < self._next_replay_check:
            return
        self._next_replay_check = now + _REPLAY_CHECK
        letters = await self._outbox.dead_letters(self._consumer, self._sub.max_batch, replay_only=True)
        if not letters:
            return
        batch = [letter.event for letter in letters]
        log.info("module %s: replaying %d dead letters", self._hosted.name, len(batch))
        while True:
            outcome = await self._offer(batch)
            if not isinstance(outcome, _Retry):
                break
        rejected = outcome.reasons if isinstance(outcome, Rejected) else {}
        still_bad = [(row, rejected[row.position]) for row in batch if row.position in rejected]
        if still_bad:
            await self._outbox.dead_letter(self._consumer, still_bad)
        accepted = [row.position for row in batch if row.position not in rejected]
        await self._outbox.resolve_dead_letters(self._consumer, accepted)
        self._outbox.record_success(self._consumer, len(accepted))
        self._next_replay_check = 0.0  # there may be more


class _Retry:
    """The handler asked for (or needs) another try; the wait is already done."""


_RETRY = _Retry()
