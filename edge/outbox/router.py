"""Storage tiers per tenant: the shared outbox (a tenant column) by default, or a tenant's own database file.

A tenant with `storage = "dedicated"` in its `[[tenants]]` entry keeps everything the outbox stores for it
(events, cursors, sequences, dead letters, usage, drop counts) in `{data_dir}/tenants/{tenant}.db`, which can
be backed up, restored, exported or erased alone, and never shares a file with another tenant.

`TieredOutbox` is the shared outbox plus one `SqliteOutbox` per dedicated tenant. Every tenant-scoped call
goes to the current tenant's database; each database keeps its own writer, so batching stays one group commit
per database. Positions are per database: they are only ever compared within one tenant (cursors are per
consumer and tenant), so nothing above this class notices which file a tenant lives in.

Moving a tenant between tiers is `edge.outbox.tenant_ops.move_tenant`, with the gateway stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edge.outbox import CommitListener, ConsumerStatus, DeadLetter, Dropped, RetentionPolicy
from edge.outbox.sqlite import SqliteOutbox
from edge.outbox.tenant_ops import has_rows
from edge.sdk.events import Event, StoredEvent
from edge.sdk.tenancy import maybe_tenant

__all__ = ["TENANTS_DIR", "TieredOutbox", "dedicated_path", "misplaced_tenants"]

TENANTS_DIR = "tenants"


def dedicated_path(data_dir: Path, tenant: str) -> Path:
    return data_dir / TENANTS_DIR / f"{tenant}.db"


class TieredOutbox(SqliteOutbox):
    """The shared outbox (this object) routing dedicated tenants to their own `SqliteOutbox`."""

    def __init__(self, path: Path, dedicated: dict[str, Path], **options: Any) -> None:
        self._own_last = 0
        self._own_committed = 0
        self._own_failures = 0
        self._dedicated: dict[str, SqliteOutbox] = {}
        super().__init__(path, **options)
        retention: dict[str, RetentionPolicy] = options.pop("retention", None) or {}
        self._dedicated = {
            tenant: SqliteOutbox(
                file, retention={tenant: retention[tenant]} if tenant in retention else None, **options
            )
            for tenant, file in dedicated.items()
        }

    def _route(self) -> SqliteOutbox | None:
        """The current tenant's own outbox, or None for a tenant of the shared one (or no tenant)."""
        ctx = maybe_tenant()
        return self._dedicated.get(ctx.tenant_id) if ctx is not None else None

    # ---- counters over every database: the base class updates its own with `+=`, which these keep exact

    @property  # type: ignore[override]
    def last_position(self) -> int:
        routed = self._route()
        return routed.last_position if routed is not None else self._own_last

    @last_position.setter
    def last_position(self, value: int) -> None:
        self._own_last = value

    @property  # type: ignore[override]
    def committed_events(self) -> int:
        return self._own_committed + sum(o.committed_events for o in self._dedicated.values())

    @committed_events.setter
    def committed_events(self, value: int) -> None:  # value = total + n: keep only our own share
        self._own_committed = value - sum(o.committed_events for o in self._dedicated.values())

    @property  # type: ignore[override]
    def commit_failures(self) -> int:
        return self._own_failures + sum(o.commit_failures for o in self._dedicated.values())

    @commit_failures.setter
    def commit_failures(self, value: int) -> None:
        self._own_failures = value - sum(o.commit_failures for o in self._dedicated.values())

    # ---- lifecycle and gateway-wide calls --------------------------------------------------------------

    async def open(self) -> None:
        await super().open()
        for outbox in self._dedicated.values():
            await outbox.open()

    async def close(self) -> None:
        for outbox in self._dedicated.values():
            await outbox.close()
        await super().close()

    def add_commit_listener(self, listener: CommitListener) -> None:
        super().add_commit_listener(listener)
        for outbox in self._dedicated.values():
            outbox.add_commit_listener(listener)

    async def last_sequences(self) -> dict[tuple[str, str], int]:
        merged = await super().last_sequences()
        for tenant, outbox in self._dedicated.items():
            merged.update({k: v for k, v in (await outbox.last_sequences()).items() if k[0] == tenant})
        return merged

    def hold(self, consumer: str, tenants: Iterable[str]) -> None:
        tenants = list(tenants)
        super().hold(consumer, [t for t in tenants if t not in self._dedicated])
        for tenant in tenants:
            if tenant in self._dedicated:
                self._dedicated[tenant].hold(consumer, [tenant])

    def release(self, consumer: str, tenants: Iterable[str]) -> None:
        tenants = list(tenants)
        super().release(consumer, [t for t in tenants if t not in self._dedicated])
        for tenant in tenants:
            if tenant in self._dedicated:
                self._dedicated[tenant].release(consumer, [tenant])

    @property
    def queued(self) -> int:
        return super().queued + sum(o.queued for o in self._dedicated.values())

    # ---- tenant-scoped: the current tenant's database ---------------------------------------------------

    async def append(self, event: Event) -> None:
        routed = self._dedicated.get(event.tenant)
        await (routed.append(event) if routed is not None else super().append(event))

    async def append_durable(self, event: Event) -> int:
        routed = self._dedicated.get(event.tenant)
        return await (routed.append_durable(event) if routed is not None else super().append_durable(event))

    async def append_report(self, event: Event) -> None:
        routed = self._dedicated.get(event.tenant)
        await (routed.append_report(event) if routed is not None else super().append_report(event))

    def set_cursor(self, consumer: str, position: int) -> None:
        routed = self._route()
        (routed.set_cursor if routed is not None else super().set_cursor)(consumer, position)

    def record_success(self, consumer: str, delivered: int) -> None:
        routed = self._route()
        (routed.record_success if routed is not None else super().record_success)(consumer, delivered)

    def record_failure(self, consumer: str, reason: str) -> None:
        routed = self._route()
        (routed.record_failure if routed is not None else super().record_failure)(consumer, reason)

    async def cursor(self, consumer: str) -> int:
        routed = self._route()
        return await (routed.cursor(consumer) if routed is not None else super().cursor(consumer))

    async def consumer_status(self, consumer: str) -> ConsumerStatus:
        routed = self._route()
        return await (
            routed.consumer_status(consumer) if routed is not None else super().consumer_status(consumer)
        )

    async def read_after(
        self, position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[StoredEvent]:
        routed = self._route()
        if routed is not None:
            return await routed.read_after(position, limit, types)
        return await super().read_after(position, limit, types)

    async def read_device(
        self,
        device: str,
        types: Sequence[str],
        *,
        after: int = 0,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[StoredEvent]:
        routed = self._route()
        read = routed.read_device if routed is not None else super().read_device
        return await read(
            device, types, after=after, since=since, until=until, limit=limit, newest_first=newest_first
        )

    async def backlog(self, consumer: str) -> int:
        routed = self._route()
        return await (routed.backlog(consumer) if routed is not None else super().backlog(consumer))

    async def count(self) -> int:
        routed = self._route()
        return await (routed.count() if routed is not None else super().count())

    async def dead_letter(self, consumer: str, rejected: Sequence[tuple[StoredEvent, str]]) -> None:
        routed = self._route()
        await (
            routed.dead_letter(consumer, rejected)
            if routed is not None
            else super().dead_letter(consumer, rejected)
        )

    async def dead_letters(
        self, consumer: str | None = None, limit: int = 100, replay_only: bool = False
    ) -> list[DeadLetter]:
        routed = self._route()
        if routed is not None:
            return await routed.dead_letters(consumer, limit, replay_only)
        return await super().dead_letters(consumer, limit, replay_only)

    async def resolve_dead_letters(self, consumer: str, positions: Sequence[int]) -> None:
        routed = self._route()
        if routed is not None:
            await routed.resolve_dead_letters(consumer, positions)
        else:
            await super().resolve_dead_letters(consumer, positions)

    async def request_replay(self, consumer: str | None = None) -> int:
        routed = self._route()
        return await (
            routed.request_replay(consumer) if routed is not None else super().request_replay(consumer)
        )

    def holders(self) -> frozenset[str]:
        routed = self._route()
        return routed.holders() if routed is not None else super().holders()

    def policy(self) -> RetentionPolicy:
        routed = self._route()
        return routed.policy() if routed is not None else super().policy()

    def usage(self) -> tuple[int, int]:
        routed = self._route()
        return routed.usage() if routed is not None else super().usage()

    def take_refused(self) -> Dropped:
        routed = self._route()
        return routed.take_refused() if routed is not None else super().take_refused()

    async def delivered_floor(self) -> int:
        routed = self._route()
        return await (routed.delivered_floor() if routed is not None else super().delivered_floor())

    async def first_position_since(self, enqueued: float) -> int | None:
        routed = self._route()
        if routed is not None:
            return await routed.first_position_since(enqueued)
        return await super().first_position_since(enqueued)

    async def position_freeing(self, nbytes: int) -> int | None:
        routed = self._route()
        return await (
            routed.position_freeing(nbytes) if routed is not None else super().position_freeing(nbytes)
        )

    async def delete_through(self, position: int, delivered_through: int, reason: str | None) -> Dropped:
        routed = self._route()
        if routed is not None:
            return await routed.delete_through(position, delivered_through, reason)
        return await super().delete_through(position, delivered_through, reason)

    async def record_drops(self, reason: str, dropped: Dropped) -> None:
        routed = self._route()
        await (
            routed.record_drops(reason, dropped)
            if routed is not None
            else super().record_drops(reason, dropped)
        )

    async def drop_totals(self) -> dict[str, tuple[int, int]]:
        routed = self._route()
        return await (routed.drop_totals() if routed is not None else super().drop_totals())

    def dedicated_tenants(self) -> frozenset[str]:
        return frozenset(self._dedicated)

    def database_of(self, tenant: str) -> Path:
        routed = self._dedicated.get(tenant)
        return routed.path if routed is not None else self.path


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
