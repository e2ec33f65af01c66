"""The gateway's webhook service: one durable outbox consumer per active subscription.

At start, and every `reload_interval` seconds after, the dispatcher reads each tenant's subscriptions from
the `WebhookStore` (so `edge webhook add|remove|pause|resume` take effect within a second or two, whether
they came from the CLI or the API) and starts, restarts or stops consumers to match. Every subscription,
paused ones included, holds its tenant's rows in the outbox until it has passed them; a removed one releases
them.

Isolation: each subscription has its own task and its own HTTP client (at most two connections, one request
in flight), so a slow or dead receiver only ever delays itself; the dispatcher never waits for a delivery and
the bus never waits for the dispatcher (consumers read the outbox, woken by its commits).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import httpx

from edge.module_host.batches import run_batch_consumer
from edge.outbox import OutboxStore
from edge.sdk.grid import sleep_until_next_tick
from edge.sdk.tenancy import TenantContext, tenant_scope
from edge.webhooks.delivery import Deliverer, DeliveryPolicy, DeliveryStats
from edge.webhooks.guard import DestinationPolicy, GuardedTransport
from edge.webhooks.store import Subscription, WebhookStore, consumer_name

__all__ = ["WebhookDispatcher"]

log = logging.getLogger(__name__)

_BATCH = 100  # events read per outbox query; each still goes out as its own request
_SECRET_RECHECK = 60.0  # seconds between looks at whether a rotated-out secret has expired


@dataclass
class _Running:
    subscription: Subscription
    task: asyncio.Task[None]
    client: httpx.AsyncClient
    stats: DeliveryStats


class WebhookDispatcher:
    def __init__(
        self,
        outbox: OutboxStore,
        store: WebhookStore,
        tenants: Iterable[TenantContext],
        destinations: DestinationPolicy,
        policy: DeliveryPolicy,
        *,
        reload_interval: float = 1.0,
        pace: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._outbox = outbox
        self._store = store
        self._tenants = {t.tenant_id: t for t in tenants}
        self._destinations = destinations
        self._policy = policy
        self._reload = reload_interval
        self._pace = pace  # the tenant's delivery rate over all its subscriptions (edge.ops.quotas)
        self._running: dict[str, _Running] = {}
        self._held: dict[str, str] = {}  # subscription id -> tenant, for every subscription holding rows
        self.stats: dict[str, DeliveryStats] = {}
        # cluster mode on a shared outbox: a tenant's subscriptions deliver from its leader only
        self.runs_here: Callable[[str], bool] = lambda tenant: True

    async def sync(self) -> None:
        """Match the running consumers to the stored subscriptions (called at start and periodically)."""
        here = [ctx for ctx in self._tenants.values() if self.runs_here(ctx.tenant_id)]
        # every tenant's list in one thread hop: this runs every second (see edge.sdk.grid on wakeups)
        wanted = {s.id: s for s in await asyncio.to_thread(self._list_subscriptions, here)}
        for sub_id in [s for s in self._held if s not in wanted]:
            await self._stop(sub_id)
            tenant = self._held.pop(sub_id)
            self._outbox.release(consumer_name(sub_id), [tenant])
            where = "removed" if self.runs_here(tenant) else "delivers from the tenant's leader"
            log.info("webhook %s of tenant %s %s", sub_id, tenant, where)
        for sub_id, sub in wanted.items():
            if sub_id not in self._held:
                self._outbox.hold(sub.consumer, [sub.tenant])
                self._held[sub_id] = sub.tenant
            running = self._running.get(sub_id)
            if running is not None and (running.subscription != sub or running.task.done()):
                await self._stop(sub_id)
                running = None
            if running is None and sub.state == "active":
                await self._start(sub)

    def _list_subscriptions(self, tenants: Iterable[TenantContext]) -> list[Subscription]:
        """The stored subscriptions of `tenants` (blocking: on a worker thread)."""
        found: list[Subscription] = []
        for ctx in tenants:
            with tenant_scope(ctx):
                found += self._store.list()
        return found

    async def run(self) -> None:
        """Reload subscriptions every `reload_interval` seconds, until cancelled."""
        try:
            while True:
                await sleep_until_next_tick(self._reload)
                await self.sync()
        finally:
            for sub_id in list(self._running):
                await self._stop(sub_id)

    async def _start(self, sub: Subscription) -> None:
        ctx = self._tenants[sub.tenant]
        with tenant_scope(ctx):
            secrets = await asyncio.to_thread(self._store.signing_secrets, sub.id)
        expires = time.monotonic() + _SECRET_RECHECK

        def current() -> list[str]:
            nonlocal secrets, expires
            if len(secrets) > 1 and time.monotonic() > expires:  # a rotation's grace period may be over
                with tenant_scope(ctx):
                    secrets = self._store.signing_secrets(sub.id)
                expires = time.monotonic() + _SECRET_RECHECK
            return secrets

        client = httpx.AsyncClient(
            transport=GuardedTransport(self._destinations),
            follow_redirects=False,
            timeout=httpx.Timeout(self._policy.timeout),
        )
        stats = self.stats.setdefault(sub.id, DeliveryStats(f"webhook {sub.id}"))
        pace = functools.partial(self._pace, sub.tenant) if self._pace is not None else None
        deliverer = Deliverer(sub, current, client, self._policy, stats, self._pauser(ctx, sub.id), pace)
        task = asyncio.create_task(
            run_batch_consumer(
                self._outbox, stats, ctx, sub.consumer, sub.types or None, deliverer, max_batch=_BATCH
            ),
            name=f"webhook-{sub.id}",
        )
        self._running[sub.id] = _Running(sub, task, client, stats)
        log.info("webhook %s of tenant %s delivers to %s", sub.id, sub.tenant, sub.url)

    async def _stop(self, sub_id: str) -> None:
        running = self._running.pop(sub_id, None)
        if running is None:
            return
        running.task.cancel()
        await asyncio.wait([running.task])
        if not running.task.cancelled() and running.task.exception() is not None:
            log.error("webhook %s stopped on an error: %r", sub_id, running.task.exception())
        await running.client.aclose()

    def _pauser(self, ctx: TenantContext, sub_id: str) -> Callable[[str], Awaitable[None]]:
        async def pause(reason: str) -> None:
            with tenant_scope(ctx):
                await asyncio.to_thread(self._store.set_state, sub_id, "paused", reason)
            log.warning("webhook %s of tenant %s paused: %s", sub_id, ctx.tenant_id, reason)

        return pause
