"""Outbound webhooks: tenant-scoped subscriptions, delivered as signed CloudEvents (docs/webhooks.md).

Public API: `WebhookStore` (add, list, get, set_state, remove, dead_letters, replay: what the CLI and the
REST API call), `Subscription`, `CreatedSubscription`, `DeadDelivery`, `SubscriptionNotFound`,
`WebhookDispatcher` (the gateway's delivery service), `DestinationPolicy` (the SSRF guard) and `open_store`,
which opens the store of a loaded configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edge.config import LoadedConfig
from edge.outbox.backends import open_inspector, pg_place
from edge.outbox.inspect import OutboxInspector
from edge.sdk.tenancy import current_tenant
from edge.webhooks.delivery import DeliveryPolicy, DeliveryStats
from edge.webhooks.dispatcher import WebhookDispatcher
from edge.webhooks.guard import DestinationPolicy, DestinationRefused
from edge.webhooks.store import (
    CreatedSubscription,
    DeadDelivery,
    Subscription,
    SubscriptionNotFound,
    WebhookStore,
)

if TYPE_CHECKING:
    from edge.webhooks.pg_table import PostgresTable

__all__ = [
    "CreatedSubscription",
    "DeadDelivery",
    "DeliveryPolicy",
    "DeliveryStats",
    "DestinationPolicy",
    "DestinationRefused",
    "Subscription",
    "SubscriptionNotFound",
    "WebhookDispatcher",
    "WebhookStore",
    "delivery_policy",
    "destination_policy",
    "open_store",
]


def destination_policy(loaded: LoadedConfig) -> DestinationPolicy:
    return DestinationPolicy(str(n) for n in loaded.config.webhooks.allow_networks)


def delivery_policy(loaded: LoadedConfig) -> DeliveryPolicy:
    hooks = loaded.config.webhooks
    return DeliveryPolicy(hooks.timeout, hooks.max_attempts, hooks.retry_initial, hooks.retry_cap)


def open_store(loaded: LoadedConfig) -> WebhookStore:
    """The subscriptions of this gateway: in its SQLite file (created if the gateway never ran), or with a
    PostgreSQL outbox in each tenant's PostgreSQL place, where every instance sharing it sees the same ones;
    their cursors and dead letters in the configured outbox, each tenant's in its own store (tier)."""
    config = loaded.config

    file = loaded.data_dir / config.storage.path
    tenants = {t.id: t for t in config.tenants}
    table: PostgresTable | Path = file
    if config.storage.backend == "postgresql":
        from edge.webhooks.pg_table import PostgresTable  # psycopg loads only for a PostgreSQL outbox

        table = PostgresTable(lambda tenant: pg_place(config.storage, tenants.get(tenant)), legacy=file)

    def outbox() -> OutboxInspector:
        if not isinstance(table, Path):
            table.ready()  # `edge webhook add` before any gateway ran: the place and its outbox created
        tenant = current_tenant().tenant_id
        return open_inspector(config, loaded.data_dir, tenant=tenant, writable=True)

    return WebhookStore(
        table, destination_policy(loaded), max_per_tenant=config.webhooks.max_subscriptions, outbox=outbox
    )
