"""Storage tiers per tenant: the shared outbox (a tenant column) by default, or a tenant's own store.

On SQLite, a tenant with `storage = "dedicated"` in its `[[tenants]]` entry keeps everything the outbox stores
for it (events, cursors, sequences, dead letters, usage, drop counts) in `{data_dir}/tenants/{tenant}.db`,
which can be backed up, restored, exported or erased alone, and never shares a file with another tenant. On
PostgreSQL the same router holds a schema or a database per tenant (`edge.outbox.backends`).

`OutboxRouter` holds the stores (`GroupCommitOutbox`, either backend): the shared one and one per dedicated
tenant. It re-declares nothing of the `OutboxStore` interface. Members that act for one tenant are listed by
name in `TENANT_SCOPED` and resolved on the current tenant's store (`edge.sdk.tenancy`; the shared store
outside a tenant scope); appends go to the store of the event's tenant; the few members that span stores
(open, close, commit listeners, hold/release, counters, the kernel's cross-tenant listings) are written out
here. A name that is none of these raises `AttributeError`, never reaches the shared store by default, and
tests/outbox/test_router.py fails for every member of `OutboxStore` that is not classified.

Each database keeps its own writer, so batching stays one group commit per database. Positions are per
database: they are only ever compared within one tenant (cursors are per consumer and tenant), so nothing
above the router notices which file a tenant lives in.

Callers type against `edge.outbox.OutboxStore`: `routed` hands the router out under that type, a cast made once
here and held true by the classification test.

Moving a tenant between tiers is `edge.outbox.tenant_ops.move_tenant`, with the gateway stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

from edge.outbox import CommitListener, OutboxStore, RetentionPolicy, WakeListener
from edge.outbox.sqlite import SqliteOutbox
from edge.outbox.store import GroupCommitOutbox
from edge.outbox.tenant_ops import has_rows
from edge.sdk.events import Event
from edge.sdk.tenancy import maybe_tenant

__all__ = [
    "TENANTS_DIR",
    "TENANT_SCOPED",
    "OutboxRouter",
    "dedicated_path",
    "misplaced_tenants",
    "routed",
    "tiered_outbox",
]

TENANTS_DIR = "tenants"

# Members of OutboxStore that act for the current tenant only: resolved on its store.
TENANT_SCOPED = frozenset(
    {
        "backlog",
        "consumer_status",
        "count",
        "cursor",
        "dead_letter",
        "dead_letters",
        "delete_through",
        "delivered_floor",
        "drop_totals",
        "first_position_since",
        "holders",
        "inspector",  # a status view of the current tenant's store
        "last_position",  # positions are per database: the current tenant's newest
        "now",  # the clock that stamps the tenant's rows
        "policy",
        "position_freeing",
        "read_after",
        "read_device",
        "record_drops",
        "record_failure",
        "record_success",
        "request_replay",
        "resolve_dead_letters",
        "set_cursor",
        "take_refused",
        "usage",
    }
)


def dedicated_path(data_dir: Path, tenant: str) -> Path:
    return data_dir / TENANTS_DIR / f"{tenant}.db"


def tiered_outbox(
    path: Path,
    dedicated: Mapping[str, Path],
    *,
    retention: Mapping[str, RetentionPolicy] | None = None,
    **options: Any,
) -> OutboxStore:
    """The gateway's outbox: `SqliteOutbox` at `path` when no tenant has its own file (no routing layer to
    pay for), else an `OutboxRouter` over it and one `SqliteOutbox` per entry of `dedicated` (tenant -> file).
    `options` are `SqliteOutbox`'s; each dedicated store gets only its own tenant's retention policy."""
    policies = dict(retention or {})
    shared = SqliteOutbox(path, retention=policies, **options)
    stores = {
        tenant: SqliteOutbox(
            file, retention={tenant: policies[tenant]} if tenant in policies else None, **options
        )
        for tenant, file in dedicated.items()
    }
    return routed(shared, stores)


def routed(shared: GroupCommitOutbox, dedicated: Mapping[str, GroupCommitOutbox]) -> OutboxStore:
    """`shared` alone when no tenant has its own store (no routing layer to pay for), else a router."""
    if not dedicated:
        return shared
    # The router answers every member of OutboxStore (tests/outbox/test_router.py checks it).
    return cast(OutboxStore, OutboxRouter(shared, dedicated))


class OutboxRouter:
    """The shared store and one store per dedicated tenant, routed by tenant (see the module docs)."""

    def __init__(self, shared: GroupCommitOutbox, dedicated: Mapping[str, GroupCommitOutbox]) -> None:
        self._shared = shared
        self._dedicated = dict(dedicated)

    def store_of(self, tenant: str) -> GroupCommitOutbox:
        """The store that keeps `tenant`'s rows."""
        return self._dedicated.get(tenant, self._shared)

    def _current(self) -> GroupCommitOutbox:
        ctx = maybe_tenant()
        return self._shared if ctx is None else self.store_of(ctx.tenant_id)

    def _stores(self) -> list[GroupCommitOutbox]:
        return [self._shared, *self._dedicated.values()]

    def __getattr__(self, name: str) -> object:
        """Only reached for names this class does not define: the tenant-scoped members of OutboxStore."""
        if name in TENANT_SCOPED:
            return getattr(self._current(), name)
        raise AttributeError(
            f"OutboxRouter does not route {name!r}: add it to TENANT_SCOPED or write its fan-out"
            " in edge/outbox/router.py"
        )

    # ---- the event's tenant ------------------------------------------------------------------------------

    async def append(self, event: Event) -> None:
        await self.store_of(event.tenant).append(event)

    async def append_durable(self, event: Event) -> int:
        return await self.store_of(event.tenant).append_durable(event)

    async def append_report(self, event: Event) -> None:
        await self.store_of(event.tenant).append_report(event)

    # ---- every store ---------------------------------------------------------------------------------------

    @property
    def location(self) -> str:
        """The shared store's (messages)."""
        return self._shared.location

    async def open(self) -> None:
        for store in self._stores():
            await store.open()

    async def close(self) -> None:
        for store in reversed(self._stores()):
            await store.close()

    def add_commit_listener(self, listener: CommitListener) -> None:
        for store in self._stores():
            store.add_commit_listener(listener)

    def add_wake_listener(self, listener: WakeListener) -> None:
        for store in self._stores():
            store.add_wake_listener(listener)

    def hold(self, consumer: str, tenants: Iterable[str]) -> None:
        for tenant in tenants:
            self.store_of(tenant).hold(consumer, [tenant])

    def release(self, consumer: str, tenants: Iterable[str]) -> None:
        for tenant in tenants:
            self.store_of(tenant).release(consumer, [tenant])

    async def last_sequences(self) -> dict[tuple[str, str], int]:
        """Kernel-internal: each dedicated tenant's sequences come from its own file."""
        merged = await self._shared.last_sequences()
        for tenant, store in self._dedicated.items():
            merged.update({k: v for k, v in (await store.last_sequences()).items() if k[0] == tenant})
        return merged

    async def stored_cursors(self, prefix: str) -> list[tuple[str, str]]:
        """Kernel-internal: every tenant's stored cursors, each read from the tenant's own file."""
        found = [c for c in await self._shared.stored_cursors(prefix) if c[1] not in self._dedicated]
        for tenant, store in self._dedicated.items():
            found += [c for c in await store.stored_cursors(prefix) if c[1] == tenant]
        return found

    @property
    def queued(self) -> int:
        return sum(store.queued for store in self._stores())

    @property
    def committed_events(self) -> int:
        return sum(store.committed_events for store in self._stores())

    @property
    def commits(self) -> int:
        return sum(store.commits for store in self._stores())

    @property
    def commit_failures(self) -> int:
        return sum(store.commit_failures for store in self._stores())


def misplaced_tenants(data_dir: Path, shared: Path, tiers: Mapping[str, str]) -> list[str]:
    """Tenants whose stored data sits in the other tier than their config says (a setting changed without
    `edge tenant move`): their events are not lost, but the gateway would not see them. One line each."""
    problems = []
    for tenant, tier in sorted(tiers.items()):
        other = shared if tier == "dedicated" else dedicated_path(data_dir, tenant)
        if has_rows(other, tenant):
            problems.append(
                f"tenant {tenant!r} is configured {tier!r} but has stored data in {other}; "
                f"run `edge tenant move {tenant} --to {tier}` with the gateway stopped"
            )
    return problems
