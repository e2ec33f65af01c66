"""A webhook delivery rig on real parts: a real SQLite outbox, the gateway's dispatcher, real HTTP receivers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from edge.outbox import RetentionPolicy
from edge.outbox.sqlite import SqliteOutbox
from edge.sdk.events import TELEMETRY, make_event
from edge.sdk.tenancy import TenantContext, tenant_scope
from edge.webhooks import DeliveryPolicy, DestinationPolicy, WebhookDispatcher, WebhookStore

ACME = TenantContext("acme")
GLOBEX = TenantContext("globex")
TENANTS = {"acme": ACME, "globex": GLOBEX}
FAST = DeliveryPolicy(timeout=2.0, max_attempts=3, retry_initial=0.05, retry_cap=0.2)


@dataclass
class Rig:
    outbox: SqliteOutbox
    store: WebhookStore
    dispatcher: WebhookDispatcher
    path: Path

    async def emit(
        self, tenant: str, device: str = "inv-01", site: str = "roof", points: dict[str, float] | None = None
    ) -> str:
        """Commit one telemetry event of `tenant`; returns its id (the webhook-id of its deliveries)."""
        samples = {
            k: {"value": v, "unit": None, "quality": "good"} for k, v in (points or {"p": 1.0}).items()
        }
        event = make_event(
            type=TELEMETRY,
            source="/gw-test/test",
            subject=f"{site}/{device}",
            tenant=tenant,
            time=time.time(),
            data={"site": site, "device": device, "points": samples},
            device=device,
        )
        with tenant_scope(TENANTS[tenant]):
            await self.outbox.append_durable(event)
        return event.id

    def add(self, tenant: str, url: str, **filters: Sequence[str]) -> tuple[str, str]:
        """(subscription id, secret) of a new subscription of `tenant`."""
        with tenant_scope(TENANTS[tenant]):
            created = self.store.add(url, **filters)
        return created.subscription.id, created.secret


@asynccontextmanager
async def rig(
    path: Path,
    policy: DeliveryPolicy = FAST,
    reload: float = 0.1,
    allow: Sequence[str] = ("127.0.0.1/32",),
    retention: dict[str, RetentionPolicy] | None = None,
) -> AsyncIterator[Rig]:
    outbox = SqliteOutbox(path / "outbox.db", commit_interval=0.002, retention=retention)
    await outbox.open()
    store = WebhookStore(path / "outbox.db", DestinationPolicy(allow))
    dispatcher = WebhookDispatcher(
        outbox, store, TENANTS.values(), DestinationPolicy(allow), policy, reload_interval=reload
    )
    await dispatcher.sync()
    task = asyncio.create_task(dispatcher.run())
    try:
        yield Rig(outbox, store, dispatcher, path)
    finally:
        task.cancel()
        await asyncio.wait([task])
        store.close()
        await outbox.close()
