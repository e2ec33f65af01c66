"""Per-tenant limits: what one tenant may take of the gateway's shared parts, so a heavy one never slows the rest.

Every limit is a token bucket (`edge.sdk.ratelimit.TokenBucket`) per tenant, configured in `[limits]` and per
tenant in `[[tenants]] limits` (`GatewayConfig.tenant_limits`), and acts by its own policy:

| limit | counted where | over the limit |
|---|---|---|
| `ingest` (events/s) | each poll or pushed change of the tenant's devices, before the device is read | slowed: the tenant's pollers wait (the devices are read less often), nothing read is dropped |
| `mqtt` (messages/s) | each batch of events the MQTT publisher sends, and each retained point update | slowed: the events wait in the outbox (durable) and go out later; point updates coalesce (the newest value goes out later) |
| `module_time` (s/s) | in-process handler time the tenant's events cost | slowed: that tenant's deliveries to modules wait until the time is paid back |
| `webhooks` (deliveries/s) | each delivery attempt of any of the tenant's subscriptions | slowed: the deliveries wait, the events stay in the outbox |
| `api` (requests/s) | each authenticated REST request acting for the tenant | refused: 429 with Retry-After |
| `ws_clients` (open streams) | each WebSocket stream of the tenant | refused: closed with 1013 and the reason |
| `commands` (module commands/s) | each module command (MQTT or API) | refused with the reason: the API's error, or an answer on the MQTT result topic (not stored as an event) |

Stored bytes are the outbox's own per-tenant quota (`[storage.retention] max_bytes`, edge/outbox/retention.py):
under `drop_oldest` the tenant's own oldest events go, never another tenant's; under `refuse_newest` its new
ones are refused; both counted and reported as `org.edgegw.outbox.dropped`.

Every action is counted (`GatewayStats.quotas`: `edge status`, `/v1/status`, Prometheus `/metrics`) and
logged with the tenant, the limit and why, at most once a minute per tenant and limit (with the count since).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from edge.config.models import TenantLimits
from edge.ops.stats import GatewayStats, QuotaCounter
from edge.sdk.ratelimit import TokenBucket

__all__ = ["LOG_EVERY", "Quotas"]

log = logging.getLogger(__name__)

LOG_EVERY = 60.0  # seconds between two log lines about the same tenant and limit

_WHAT = {
    "ingest": "its devices' polls are slowed",
    "mqtt": "its MQTT publishing waits (events stay in the outbox, point updates coalesce)",
    "module_time": "its module deliveries wait",
    "webhooks": "its webhook deliveries wait (events stay in the outbox)",
    "api": "REST requests refused with 429",
    "ws_clients": "WebSocket streams refused with 1013",
    "commands": "module commands refused",
}


class _Tenant:
    def __init__(self, limits: TenantLimits) -> None:
        self.limits = limits
        self.ingest = TokenBucket(limits.ingest_rate, limits.ingest_burst)
        self.mqtt = TokenBucket(limits.mqtt_rate, max(limits.mqtt_rate, 1.0))
        # a second's worth of handler time may be spent at once, then it is paid back at `module_time` s/s
        self.module_time = TokenBucket(limits.module_time, 1.0)
        self.webhooks = TokenBucket(limits.webhook_rate, max(limits.webhook_rate, 1.0))
        self.api = TokenBucket(limits.api_rate, limits.api_burst)
        self.commands = TokenBucket(limits.command_rate, max(limits.command_rate, 1.0))
        # limit -> (monotonic time of its last log line, how often it had acted then)
        self.logged: dict[str, tuple[float, int]] = {}


class Quotas:
    """The limits of every tenant the gateway serves; one instance, shared by the parts that count."""

    def __init__(self, limits: Mapping[str, TenantLimits], stats: GatewayStats) -> None:
        self._stats = stats
        self._tenants = {tenant: _Tenant(own) for tenant, own in limits.items()}
        for tenant, own in limits.items():
            stats.quotas[tenant] = {
                "ingest": QuotaCounter(own.ingest_rate, "slow"),
                "mqtt": QuotaCounter(own.mqtt_rate, "slow"),
                "module_time": QuotaCounter(own.module_time, "slow"),
                "webhooks": QuotaCounter(own.webhook_rate, "slow"),
                "api": QuotaCounter(own.api_rate, "refuse"),
                "ws_clients": QuotaCounter(float(own.ws_clients), "refuse"),
                "commands": QuotaCounter(own.command_rate, "refuse"),
            }

    # ---- slowed: the caller waits for its tenant's tokens --------------------------------------------------

    async def ingest(self, tenant: str, events: int = 1) -> None:
        """Before a device of `tenant` is read (or its pushed changes become an event)."""
        await self._wait(tenant, "ingest", events)

    async def publish(self, tenant: str, events: int) -> None:
        """Before the MQTT publisher sends a batch of `tenant`'s events."""
        await self._wait(tenant, "mqtt", events)

    def point_updates_due(self, tenant: str) -> bool:
        """Whether `tenant`'s retained point updates may go out now: not while its MQTT rate is in debt (they
        are state, not history: held back, they coalesce, and the newest value goes out later)."""
        own = self._tenants.get(tenant)
        if own is None or not own.mqtt.in_debt:
            return True
        counter = self._stats.quota(tenant, "mqtt")
        counter.act(1)
        self._note(tenant, "mqtt", counter)
        return False

    def point_updates_sent(self, tenant: str, updates: int) -> None:
        """Retained point updates of `tenant` that went out: they count against its MQTT rate."""
        own = self._tenants.get(tenant)
        if own is not None and updates:
            own.mqtt.charge(updates)

    async def webhook(self, tenant: str) -> None:
        """Before one webhook delivery attempt of `tenant`."""
        await self._wait(tenant, "webhooks", 1)

    async def module_turn(self, tenant: str) -> None:
        """Before a batch of `tenant`'s events goes to a module: waits while its handler time is in debt."""
        await self._wait(tenant, "module_time", 0)

    def module_spent(self, tenant: str, seconds: float) -> None:
        """After a handler ran for `tenant`: the time it took is charged to the tenant."""
        own = self._tenants.get(tenant)
        if own is not None:
            own.module_time.charge(seconds)

    async def _wait(self, tenant: str, name: str, units: float) -> None:
        own = self._tenants.get(tenant)
        if own is None:  # a tenant added to a running gateway has no limits until the restart
            return
        bucket: TokenBucket = getattr(own, name)
        waited = await bucket.take(units)
        if waited > 0:
            counter = self._stats.quota(tenant, name)
            counter.act(units, waited)
            self._note(tenant, name, counter)

    # ---- refused: the caller turns the request away with the reason ----------------------------------------

    def api_request(self, tenant: str) -> float | None:
        """None when a REST request of `tenant` may proceed; else the seconds to put in Retry-After."""
        return self._refuse(tenant, "api")

    def module_command(self, tenant: str, module: str) -> str | None:
        """None when a command of `tenant` for `module` may proceed; else the reason it is refused."""
        retry = self._refuse(tenant, "commands")
        if retry is None:
            return None
        rate = self._tenants[tenant].limits.command_rate
        return (
            f"tenant {tenant} is over its module command limit ({rate:g}/s, any module; {module} asked);"
            f" retry in {retry:.1f} s"
        )

    def ws_client(self, tenant: str, open_now: int) -> str | None:
        """None when `tenant` may open one more stream besides its `open_now`; else the reason it may not."""
        own = self._tenants.get(tenant)
        if own is None or open_now < own.limits.ws_clients:
            return None
        counter = self._stats.quota(tenant, "ws_clients")
        counter.act(1)
        self._note(tenant, "ws_clients", counter)
        return f"tenant {tenant} has {open_now} live streams, its limit"

    def _refuse(self, tenant: str, name: str) -> float | None:
        own = self._tenants.get(tenant)
        if own is None:
            return None
        bucket: TokenBucket = getattr(own, name)
        retry = bucket.try_take(1)
        if retry == 0.0:
            return None
        counter = self._stats.quota(tenant, name)
        counter.act(1)
        self._note(tenant, name, counter)
        return retry

    def _note(self, tenant: str, name: str, counter: QuotaCounter) -> None:
        """Log the limit acting, at most once per `LOG_EVERY` per tenant and limit: never silent, never a flood."""
        own = self._tenants[tenant]
        now = time.monotonic()
        last, acts_then = own.logged.get(name, (-LOG_EVERY, 0))
        if now - last < LOG_EVERY:
            return
        own.logged[name] = (now, counter.acted)
        since = counter.acted - acts_then
        log.warning(
            "tenant %s is over its %s limit (%g): %s (%d times since the last report, %g units, %.1f s waited)",
            tenant,
            name,
            counter.limit,
            _WHAT[name],
            since,
            counter.units,
            counter.waited_s,
        )
