"""Where in-process modules' event subscriptions read from: the outbox (default) or the bus's durable store.

`EventFeed` is what the module host needs of that source; the host never knows which one it has. Each
subscription of a module is one durable consumer per entitled tenant (`module:<name>:<n>`), read batch by
batch and acknowledged once handled (at-least-once):

- `OutboxFeed`: the outbox's `DurableConsumer`; a consumer holds the tenant's rows until it passed them.
- `edge.bus.nats_feed.JetStreamFeed` (`[bus] mode = "nats"`, `[bus.nats] modules = "jetstream"`): a durable
  JetStream consumer on the tenant's events stream, so a module reads what every gateway of a site
  published, and the outbox need not keep rows for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self

from edge.outbox import OutboxStore
from edge.outbox.consumer import Batch, DurableConsumer
from edge.sdk.tenancy import TenantContext, tenant_scope

__all__ = ["BatchSource", "EventFeed", "OutboxFeed"]


class BatchSource(Protocol):
    """One consumer's batches of one tenant: `async with source: async for batch in source: ... ack(batch)`."""

    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def __aiter__(self) -> Self: ...
    async def __anext__(self) -> Batch: ...
    def ack(self, batch: Batch) -> None: ...


class EventFeed(Protocol):
    def open(
        self, tenant: TenantContext, consumer: str, types: Sequence[str] | None, max_batch: int
    ) -> BatchSource: ...
    def hold(self, consumer: str, tenant: str) -> None:
        """The consumer exists for the tenant: what it has not passed must be kept for it."""

    def release(self, consumer: str, tenant: str) -> None:
        """The consumer no longer reads the tenant's events (its entitlement was revoked)."""

    async def start_from_now(self, consumer: str, tenant: TenantContext) -> None:
        """The consumer's next read starts after the events committed so far (a newly entitled tenant)."""


class OutboxFeed:
    def __init__(self, outbox: OutboxStore) -> None:
        self._outbox = outbox

    def open(
        self, tenant: TenantContext, consumer: str, types: Sequence[str] | None, max_batch: int
    ) -> DurableConsumer:
        return DurableConsumer(self._outbox, tenant, consumer, types=types, max_batch=max_batch)

    def hold(self, consumer: str, tenant: str) -> None:
        self._outbox.hold(consumer, [tenant])

    def release(self, consumer: str, tenant: str) -> None:
        self._outbox.release(consumer, [tenant])

    async def start_from_now(self, consumer: str, tenant: TenantContext) -> None:
        with tenant_scope(tenant):
            self._outbox.set_cursor(consumer, self._outbox.last_position)
