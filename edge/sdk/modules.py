"""The module API: what a module implements (`Module`) and what it is given (`ModuleContext`).

A module implements four hooks and sees only its `ModuleContext`. The kernel hosts it in-process or isolated
in its own process (`edge.sdk.runner` over gRPC); both contexts implement the same protocol, so a module does
not know where it runs. Batch handlers answer with their outcome: return normally (all delivered), return
`Rejected` (those positions are dead-lettered with the reason, the rest delivered), or raise `RetryLater`
(nothing delivered; the same events come again later). See docs/sdk.md.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from edge.sdk.events import StoredEvent
from edge.sdk.store import StateStore
from edge.sdk.tenancy import TenantContext

__all__ = [
    "RETRY_BASE",
    "RETRY_CAP",
    "BatchHandler",
    "EventHandler",
    "Health",
    "Module",
    "ModuleContext",
    "PointWriter",
    "Rejected",
    "RetryLater",
    "TickHandler",
    "module_consumer",
]

EventHandler = Callable[[StoredEvent], Awaitable[None]]
# (module, site, device, point, value) -> None for the current tenant, through the kernel's command path;
# raises edge.sdk.errors.DeviceError (or UnknownTarget) with the reason when the write is refused or fails
PointWriter = Callable[[str, str, str, str, Any], Awaitable[None]]

# (now) -> None: a module's periodic work, called once per entitled tenant inside that tenant's context
TickHandler = Callable[[float], Awaitable[None]]

RETRY_BASE = 1.0  # seconds: the kernel's backoff for RetryLater(None), capped (reliability T04)
RETRY_CAP = 60.0


def module_consumer(module: str, subscription: str) -> str:
    """The outbox consumer (cursor) name of a module's subscription: `module:<module>:<subscription>` (an
    event subscription is named by its index, a batch subscription by its `name`). With `subscription=""`,
    the prefix every consumer of the module starts with."""
    return f"module:{module}:{subscription}"


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


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


class ModuleContext(Protocol):
    """Everything a module may touch: its config, the tenants entitled to it, its store, events in and out,
    and point writes through the kernel's command path."""

    name: str
    config: dict[str, Any]
    tenants: tuple[TenantContext, ...]
    gateway_id: str
    store: StateStore
    log: logging.Logger

    def subscribe(self, types: Sequence[str], handler: EventHandler) -> None:
        """Receive committed events of these types, per entitled tenant, in outbox order, at least once."""
        ...

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
        order, at least once; the handler's outcome decides what is acknowledged. The cursor is
        `module:<module>:<name>`, so keep `name` stable."""
        ...

    def consumer_name(self, subscription: str) -> str:
        """The outbox consumer (cursor) name of one of this module's batch subscriptions."""
        ...

    def every(self, interval: float, fn: TickHandler) -> None:
        """Call `fn(now)` every `interval` seconds (first after one interval), once per entitled tenant, inside
        that tenant's context, while the module is enabled: time-based conditions ("for longer than", stale
        data). The kernel owns the tasks: it starts a tenant's ticks when the module is enabled or the tenant
        becomes entitled, and cancels them when the module is disabled or the entitlement is revoked. A call
        that raises is logged and counted, and the ticks go on. Call it from `on_init`."""
        ...

    async def publish(self, type: str, subject: str, data: dict[str, Any]) -> str:
        """Publish an event for the current tenant; durable when this returns; returns its id."""
        ...

    async def write_point(self, site: str, device: str, point: str, value: Any) -> None:
        """Write a point of the current tenant's device through the kernel's command path.
        Raises DeviceError/UnknownTarget with the reason."""
        ...


@runtime_checkable
class Module(Protocol):
    async def on_init(self, context: ModuleContext) -> None: ...
    async def on_enable(self) -> None: ...
    async def on_disable(self) -> None: ...
    async def on_health_check(self) -> Health: ...
