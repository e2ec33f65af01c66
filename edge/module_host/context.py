"""The in-process module context: the `edge.sdk.ModuleContext` of a module hosted in the gateway's process."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.module_host.contracts import load_schema
from edge.outbox import OutboxStore
from edge.plugins import Produces
from edge.sdk.events import make_event
from edge.sdk.modules import (
    BatchHandler,
    EventHandler,
    PointWriter,
    TickHandler,
    module_consumer,
)
from edge.sdk.store import StateStore
from edge.sdk.tenancy import TenantContext, current_tenant
from edge.sdk.ticks import Tick


@dataclass
class Subscription:
    types: tuple[str, ...]
    handler: EventHandler


@dataclass
class BatchSubscription:
    name: str
    types: tuple[str, ...]
    handler: BatchHandler
    max_batch: int
    max_wait: float
    max_bytes: int | None
    tenants: frozenset[str] | None


@dataclass
class Registrations:
    """What a module asked for through its context: the host's record (it routes and ticks from it), kept
    out of the context so a module sees exactly the `ModuleContext` protocol, as when it runs isolated."""

    subscriptions: list[Subscription] = field(default_factory=list)
    batch_subscriptions: list[BatchSubscription] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)


class InProcessContext:
    """The `edge.sdk.ModuleContext` of a module hosted in the gateway's process."""

    def __init__(
        self,
        name: str,
        config: dict[str, Any],
        tenants: Sequence[TenantContext],
        outbox: OutboxStore,
        gateway_id: str,
        store: StateStore,
        point_writer: PointWriter | None = None,
        produces: Sequence[Produces] = (),
        registrations: Registrations | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.tenants = tuple(tenants)
        self.gateway_id = gateway_id
        # the module's own tenant-scoped storage (edge.sdk.store), opened and closed by the host
        self.store = store
        self._point_writer = point_writer
        self.log = logging.getLogger(f"edge.module.{name}")
        self._outbox = outbox
        self._source = f"/{gateway_id}/modules/{name}"
        self._registrations = registrations or Registrations()
        self._produces = {p.type: p for p in produces}

    def subscribe(self, types: Sequence[str], handler: EventHandler) -> None:
        """Receive committed events of these types, per entitled tenant, in outbox order, at least once."""
        self._registrations.subscriptions.append(Subscription(tuple(types), handler))

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
        self._registrations.batch_subscriptions.append(
            BatchSubscription(
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
        return module_consumer(self.name, subscription)

    def every(self, interval: float, fn: TickHandler) -> None:
        """Call `fn(now)` every `interval` seconds per entitled tenant, inside its context, while the module is
        enabled (edge.sdk.ModuleContext.every); the host owns the tasks."""
        self._registrations.ticks.append(Tick(interval, fn))

    async def write_point(self, site: str, device: str, point: str, value: Any) -> None:
        """Write a point of the current tenant's device through the kernel's command path (the same checks
        and result events as an MQTT write request). Raises DeviceError/UnknownTarget with the reason."""
        if self._point_writer is None:
            raise RuntimeError(f"module {self.name}: this host has no write path to devices")
        await self._point_writer(self.name, site, device, point, value)

    async def publish(self, type: str, subject: str, data: dict[str, Any]) -> str:
        """Publish an event for the current tenant (the one whose event is being handled); returns its id. Raises
        `edge.outbox.OutboxFull` when the tenant's quota is full under the `refuse_newest` policy.

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
