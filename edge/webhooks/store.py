"""Webhook subscriptions, kept in the gateway's SQLite file (the outbox's file when the outbox is on SQLite), or
with a PostgreSQL outbox in the tenant's PostgreSQL place, shared by every instance (`edge.webhooks.tables`).

`WebhookStore` is the typed, tenant-scoped API over them, used by `edge webhook ...` (whether the gateway runs
or not), by the running gateway (which reloads them every second) and by the REST API. Every read and write
goes through the outbox's tenant filter (`edge.outbox.schema.tenant_filter`), so a tenant only ever sees and
changes its own subscriptions and their dead letters.

Each subscription is a durable outbox consumer named `webhook:<id>`. Creating one starts its cursor at the
tenant's newest event (it receives what happens from then on, not the history); removing one deletes its
cursor, status and dead letters. Those live in the outbox, whichever backend keeps it: the store reaches them
through an `OutboxInspector` on the tenant's outbox store (`outbox`, by default the same SQLite file). The signing secret is generated here, returned once by `add`, and read back
only by the gateway's deliverer (`signing_secrets`): `Subscription` never carries it. `rotate_secret` makes a
new one and keeps signing with the old one too for a grace period (two signatures in `webhook-signature`, as
the Standard Webhooks spec provides), so the receiver can switch without losing a delivery.
"""

from __future__ import annotations

import builtins
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from edge.outbox.inspect import OutboxInspector
from edge.outbox.schema import tenant_filter
from edge.sdk.errors import EdgeError
from edge.webhooks.guard import DestinationPolicy
from edge.webhooks.signing import new_secret
from edge.webhooks.tables import COLUMNS, SqliteTable, SubscriptionTable

__all__ = [
    "CreatedSubscription",
    "DeadDelivery",
    "Subscription",
    "SubscriptionNotFound",
    "WebhookStore",
    "consumer_name",
]

State = Literal["active", "paused"]


class SubscriptionNotFound(EdgeError):
    def __init__(self, tenant: str, subscription_id: str) -> None:
        self.tenant = tenant
        self.subscription_id = subscription_id
        super().__init__(f"tenant {tenant!r} has no webhook subscription {subscription_id!r}")


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    tenant: str
    url: str
    types: tuple[str, ...]  # empty: every event type
    sites: tuple[str, ...]  # empty: every site (likewise devices and points)
    devices: tuple[str, ...]
    points: tuple[str, ...]
    state: State
    state_reason: str | None  # why it was paused (by an operator, or the receiver answered 410 Gone)
    created: float
    updated: float

    @property
    def consumer(self) -> str:
        return consumer_name(self.id)


@dataclass(frozen=True, slots=True)
class CreatedSubscription:
    subscription: Subscription
    secret: str  # shown once: the receiver verifies signatures with it


@dataclass(frozen=True, slots=True)
class DeadDelivery:
    """An event the subscription gave up on, with the reason of the last attempt."""

    position: int
    event_id: str
    type: str
    subject: str
    reason: str
    dead_at: float
    attempts: int  # how many times it was dead-lettered (replays included)
    replay: bool


def consumer_name(subscription_id: str) -> str:
    """The outbox consumer (cursor) name of a webhook subscription: `webhook:<id>` (defined here only)."""
    return f"webhook:{subscription_id}"


class WebhookStore:
    """Subscriptions of the current tenant (see the module docs). Thread-safe; each call is one short
    transaction on the table's connection. The calls block: from async code, run them through
    `asyncio.to_thread` (the tenant context goes along), as the dispatcher does."""

    def __init__(
        self,
        path: Path | SubscriptionTable,
        policy: DestinationPolicy,
        *,
        max_per_tenant: int = 50,
        outbox: Callable[[], OutboxInspector] | None = None,
    ) -> None:
        """`path`: a SQLite file, or the table elsewhere (`edge.webhooks.open_store` passes PostgreSQL's).
        `outbox`: opens a writable view of the current tenant's outbox store (`open_store` passes the
        configured backend's); None: the outbox is in the SQLite file `path` itself."""
        if isinstance(path, Path):
            file = path
            self._outbox = outbox or (lambda: OutboxInspector(file, writable=True))
            self._table: SubscriptionTable = SqliteTable(path)
        else:
            if outbox is None:
                raise ValueError("a subscription table outside a SQLite file needs the outbox it belongs to")
            self._outbox, self._table = outbox, path
        self._policy = policy
        self._max = max_per_tenant

    def close(self) -> None:
        self._table.close()

    def __enter__(self) -> WebhookStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(
        self,
        url: str,
        *,
        types: Sequence[str] = (),
        sites: Sequence[str] = (),
        devices: Sequence[str] = (),
        points: Sequence[str] = (),
        paused: bool = False,
    ) -> CreatedSubscription:
        """Create a subscription for the current tenant; raises ValueError for a refused URL or a full quota."""
        _, tenant = tenant_filter()
        self._policy.check_url(url)
        for name, values in (("types", types), ("sites", sites), ("devices", devices), ("points", points)):
            if any(not v or v != v.strip() for v in values):
                raise ValueError(f"webhook {name} filter: empty or padded value in {list(values)!r}")
        sub_id, secret, now = f"wh_{secrets.token_hex(8)}", new_secret(), time.time()
        # Start at the tenant's newest event before the subscription exists: the running gateway, which picks
        # new subscriptions up within a second, must never find one without its cursor (it would replay history).
        with self._outbox() as outbox:
            outbox.start_cursor(consumer_name(sub_id))
        try:
            self._insert(sub_id, tenant, url, (types, sites, devices, points), paused, secret, now)
        except BaseException:
            with self._outbox() as outbox:
                outbox.forget_consumer(consumer_name(sub_id))
            raise
        return CreatedSubscription(self.get(sub_id), secret)

    def _insert(
        self,
        sub_id: str,
        tenant: str,
        url: str,
        filters: tuple[Sequence[str], ...],
        paused: bool,
        secret: str,
        now: float,
    ) -> None:
        clause = tenant_filter()[0]
        with self._table.transaction() as execute:
            (count,) = execute(
                f"SELECT COUNT(*) FROM webhook_subscriptions WHERE {clause}", (tenant,)
            ).fetchone()
            if count >= self._max:
                raise ValueError(f"tenant {tenant!r} has {count} webhook subscriptions, the most allowed")
            execute(
                f"INSERT INTO webhook_subscriptions ({COLUMNS}, secret) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    sub_id,
                    tenant,
                    url,
                    *(orjson.dumps(sorted(set(v))).decode() for v in filters),
                    "paused" if paused else "active",
                    "created paused" if paused else None,
                    now,
                    now,
                    secret,
                ),
            )

    def list(self) -> builtins.list[Subscription]:
        clause, tenant = tenant_filter()
        rows = self._rows(
            f"SELECT {COLUMNS} FROM webhook_subscriptions WHERE {clause} ORDER BY created, id", (tenant,)
        )
        return [_subscription(row) for row in rows]

    def get(self, subscription_id: str) -> Subscription:
        clause, tenant = tenant_filter()
        rows = self._rows(
            f"SELECT {COLUMNS} FROM webhook_subscriptions WHERE {clause} AND id = ?",
            (tenant, subscription_id),
        )
        if not rows:
            raise SubscriptionNotFound(tenant, subscription_id)
        return _subscription(rows[0])

    def signing_secrets(self, subscription_id: str, now: float | None = None) -> builtins.list[str]:
        """The secrets deliveries are signed with, newest first (the gateway's deliverer only)."""
        clause, tenant = tenant_filter()
        rows = self._rows(
            f"SELECT secret, old_secret, old_until FROM webhook_subscriptions WHERE {clause} AND id = ?",
            (tenant, subscription_id),
        )
        if not rows:
            raise SubscriptionNotFound(tenant, subscription_id)
        secret, old, until = rows[0]
        keep_old = old is not None and until is not None and (now or time.time()) < float(until)
        return [str(secret), str(old)] if keep_old else [str(secret)]

    def rotate_secret(self, subscription_id: str, grace: float = 86_400.0) -> CreatedSubscription:
        """A new signing secret (returned once); the old one keeps signing too for `grace` seconds."""
        clause, tenant = tenant_filter()
        secret, now = new_secret(), time.time()
        with self._table.transaction() as execute:
            changed = execute(
                "UPDATE webhook_subscriptions SET old_secret = secret, old_until = ?, secret = ?, updated = ?"
                f" WHERE {clause} AND id = ?",
                (now + grace, secret, now, tenant, subscription_id),
            ).rowcount
        if not changed:
            raise SubscriptionNotFound(tenant, subscription_id)
        return CreatedSubscription(self.get(subscription_id), secret)

    def set_state(self, subscription_id: str, state: State, reason: str | None = None) -> Subscription:
        """Pause (deliveries stop, events accumulate for it) or resume a subscription."""
        clause, tenant = tenant_filter()
        with self._table.transaction() as execute:
            changed = execute(
                f"UPDATE webhook_subscriptions SET state = ?, state_reason = ?, updated = ?"
                f" WHERE {clause} AND id = ?",
                (state, reason, time.time(), tenant, subscription_id),
            ).rowcount
        if not changed:
            raise SubscriptionNotFound(tenant, subscription_id)
        return self.get(subscription_id)

    def remove(self, subscription_id: str) -> None:
        """Delete the subscription with its cursor, delivery status and dead letters."""
        clause, tenant = tenant_filter()
        consumer = consumer_name(subscription_id)
        with self._table.transaction() as execute:
            changed = execute(
                f"DELETE FROM webhook_subscriptions WHERE {clause} AND id = ?", (tenant, subscription_id)
            ).rowcount
            if not changed:
                raise SubscriptionNotFound(tenant, subscription_id)
        with self._outbox() as outbox:
            outbox.forget_consumer(consumer)

    def dead_letters(self, subscription_id: str, limit: int = 100) -> builtins.list[DeadDelivery]:
        self.get(subscription_id)
        with self._outbox() as outbox:
            rows = outbox.dead_letters(consumer_name(subscription_id), limit)
        return [
            DeadDelivery(int(p), str(i), str(t), str(s), str(r), float(d), int(a), bool(rp))
            for p, i, t, s, r, d, a, rp in rows
        ]

    def replay(self, subscription_id: str) -> int:
        """Offer the subscription's dead letters again (the running gateway within seconds, else at its
        next start); returns how many."""
        self.get(subscription_id)
        with self._outbox() as outbox:
            return outbox.request_replay(consumer_name(subscription_id))

    # ---- plumbing ----------------------------------------------------------------------------------

    def _rows(self, query: str, params: tuple[Any, ...]) -> builtins.list[tuple[Any, ...]]:
        return self._table.rows(query, params)


def _subscription(row: tuple[Any, ...]) -> Subscription:
    sub_id, tenant, url, types, sites, devices, points, state, reason, created, updated = row
    return Subscription(
        str(sub_id),
        str(tenant),
        str(url),
        tuple(orjson.loads(types)),
        tuple(orjson.loads(sites)),
        tuple(orjson.loads(devices)),
        tuple(orjson.loads(points)),
        "paused" if state == "paused" else "active",
        reason,
        float(created),
        float(updated),
    )
