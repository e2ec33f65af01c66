"""Retention: what leaves the outbox, when, and how it is accounted for.

A sweep runs every `interval` seconds, tenant by tenant (inside the tenant's context, so every read goes
through the outbox's tenant filter), in this order:

1. **Delivered history**: rows every holder (`OutboxStore.hold`: the MQTT publisher, each module consumer,
   cloud sync) has passed, stored more than `keep_delivered` seconds ago, are deleted. Not a loss; not counted.
2. **`max_age`**: rows stored more than `max_age` seconds ago are deleted; those some holder had not passed are
   counted as dropped (`limit=max_age`).
3. **`max_bytes`**: while the tenant's event bytes exceed its quota, delivered rows go first (oldest first, not
   counted); then, under `drop_oldest`, the oldest undelivered rows (counted, `limit=max_bytes`). Under
   `refuse_newest` nothing undelivered is deleted: the outbox refuses new events while the quota is full
   (`OutboxStore.append`), and the sweep counts those refusals.

Each non-empty count is persisted per tenant (in the same transaction as the delete) and reported as one
`org.edgegw.outbox.dropped` event for the tenant: nothing leaves silently. Ages use the persisted `enqueued`
time and the outbox clock, which does not step with the wall clock (reliability T10).

An event whose batch was already on its way to a consumer when its row was dropped may still arrive: the
count is what was removed before every consumer had acknowledged it, an upper bound of what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from edge.outbox import Dropped, OutboxStore
from edge.sdk.events import OUTBOX_DROPPED, make_event, rfc3339
from edge.sdk.grid import sleep_until_next_tick
from edge.sdk.tenancy import TenantContext, current_tenant, tenant_scope

log = logging.getLogger(__name__)

REPORT_SUBJECT = "_gateway/outbox"  # `_` never starts a site name, so this never collides with a device


class Retention:
    def __init__(
        self,
        outbox: OutboxStore,
        tenants: Iterable[TenantContext],
        gateway_id: str,
        *,
        interval: float = 5.0,
    ) -> None:
        self._outbox = outbox
        self._tenants = tuple(tenants)
        self._source = f"/{gateway_id}/outbox"
        self._interval = interval
        self.deleted_delivered = 0  # rows removed after every holder had them (not a loss)

    async def run(self) -> None:
        while True:
            await self.sweep()
            await sleep_until_next_tick(self._interval)

    async def sweep(self) -> dict[str, list[tuple[str, Dropped]]]:
        """One pass over every tenant; returns what was dropped or refused, per tenant and reason."""
        out: dict[str, list[tuple[str, Dropped]]] = {}
        for ctx in self._tenants:
            with tenant_scope(ctx):
                reports = await self._sweep_tenant()
            if reports:
                out[ctx.tenant_id] = reports
        return out

    async def _sweep_tenant(self) -> list[tuple[str, Dropped]]:
        outbox = self._outbox
        policy = outbox.policy()
        now = outbox.now()
        floor = await outbox.delivered_floor()
        reports: list[tuple[str, Dropped]] = []

        # 1. delivered history past keep_delivered
        keep_from = await outbox.first_position_since(now - policy.keep_delivered)
        through = floor if keep_from is None else min(floor, keep_from - 1)
        await self._delete(through, floor, None)

        # 2. max_age, whoever had them
        keep_from = await outbox.first_position_since(now - policy.max_age)
        through = outbox.last_position if keep_from is None else keep_from - 1
        lost = await self._delete(through, floor, "max_age:dropped")
        if lost.events:
            reports.append(("max_age:dropped", lost))

        # 3. max_bytes: delivered rows first, then the policy
        excess = outbox.usage()[1] - policy.max_bytes
        if excess > 0:
            freeing = await outbox.position_freeing(excess)
            if freeing is not None:
                await self._delete(min(freeing, floor), floor, None)
                excess = outbox.usage()[1] - policy.max_bytes
                if excess > 0 and policy.policy == "drop_oldest":
                    freeing = await outbox.position_freeing(excess) or 0
                    lost = await self._delete(freeing, floor, "max_bytes:dropped")
                    if lost.events:
                        reports.append(("max_bytes:dropped", lost))
        refused = outbox.take_refused()
        if refused.events:
            await outbox.record_drops("max_bytes:refused", refused)
            reports.append(("max_bytes:refused", refused))
        for reason, dropped in reports:
            await self._report(reason, dropped)
        return reports

    async def _delete(self, through: int, floor: int, reason: str | None) -> Dropped:
        if through <= 0:
            return Dropped()
        before = self._outbox.usage()[0]
        lost = await self._outbox.delete_through(through, floor, reason)
        self.deleted_delivered += before - self._outbox.usage()[0] - lost.events
        return lost

    async def _report(self, reason: str, dropped: Dropped) -> None:
        outbox = self._outbox
        limit, action = reason.split(":")
        totals = await outbox.drop_totals()
        reach = dropped.last_position  # consumers whose cursor is below it missed events
        behind = [c for c in sorted(outbox.holders()) if await outbox.cursor(c) < reach]
        data = {
            "limit": limit,
            "action": action,
            "events": dropped.events,
            "bytes": dropped.bytes,
            "first_time": rfc3339(dropped.first_time) if dropped.first_time is not None else None,
            "last_time": rfc3339(dropped.last_time) if dropped.last_time is not None else None,
            "total_events": totals.get(reason, (dropped.events, 0))[0],
            "consumers": behind if action == "dropped" else [],
        }
        tenant_id = current_tenant().tenant_id
        log.warning(
            "outbox %s %d events (%d bytes) of tenant %s over its %s limit; %d in total",
            action,
            dropped.events,
            dropped.bytes,
            tenant_id,
            limit,
            data["total_events"],
        )
        event = make_event(
            type=OUTBOX_DROPPED,
            source=self._source,
            subject=REPORT_SUBJECT,
            tenant=tenant_id,
            time=outbox.now(),
            data=data,
        )
        await outbox.append_report(event)
