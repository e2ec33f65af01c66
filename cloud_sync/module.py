"""The cloud sync module: per tenant, every outbox event to that tenant's cloud, in order, at least once.

`on_init` validates the configuration and resolves every secret once; a tenant configured here gets a batch
subscription (`subscribe_batches`, consumer `module:cloud_sync:uplink`) and its own HTTP client with its own
OAuth2 credentials and HMAC key. Each batch handler call takes the tenant's rate limit and a fair turn
(`edge.sdk.ratelimit`), then uploads (`cloud_sync.uplink`). The kernel acknowledges in the outbox only what
the handler says was delivered, re-offers the same batch after a RetryLater, and keeps per-device order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import httpx
from pydantic import ValidationError

from cloud_sync._oauth import AsyncOAuth2Client
from cloud_sync.config import CloudSyncConfig, SecretUnavailable, parse_config, resolve_secret
from cloud_sync.uplink import Circuit, TenantUplink, UplinkStats
from edge.sdk import Health, ModuleContext, Rejected, StoredEvent, current_tenant
from edge.sdk.ratelimit import FairScheduler, TokenBucket

log = logging.getLogger("edge.module.cloud_sync")

SUBSCRIPTION = "uplink"  # the outbox consumer is module:cloud_sync:uplink (edge sync status shows it)
USER_AGENT = "edge-gateway-cloud-sync/0.1"


class CloudSyncConfigError(Exception):
    """The module's configuration is invalid or a secret cannot be resolved; the module does not start."""


class CloudSync:
    def __init__(self) -> None:
        self._config: CloudSyncConfig | None = None
        self._secrets: dict[str, tuple[bytes, bytes]] = {}  # tenant -> (client secret, hmac key)
        self._uplinks: dict[str, TenantUplink] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._scheduler = FairScheduler(1)
        self._gateway = ""

    # ---- lifecycle ---------------------------------------------------------------------------------------

    async def on_init(self, context: ModuleContext) -> None:
        try:
            config = parse_config(context.config)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise CloudSyncConfigError(problems) from None
        entitled = {t.tenant_id for t in context.tenants}
        for tenant in sorted(entitled - set(config.tenants)):
            log.warning("tenant %s has no cloud uplink configured: its events are not uploaded", tenant)
        for tenant in sorted(set(config.tenants) - entitled):
            log.warning("cloud uplink configured for %s, which is not a tenant of this gateway", tenant)
        chosen = sorted(entitled & set(config.tenants))
        for tenant in chosen:
            uplink = config.tenants[tenant]
            try:
                self._secrets[tenant] = (
                    resolve_secret(uplink.client_secret),
                    resolve_secret(uplink.hmac_key),
                )
            except SecretUnavailable as exc:
                raise CloudSyncConfigError(f"tenants.{tenant}: {exc}") from None
        self._config = config
        self._gateway = context.gateway_id
        self._scheduler = FairScheduler(config.max_concurrent_uploads)
        for tenant in chosen:
            uplink = config.tenants[tenant]
            self._scheduler.add(tenant, uplink.weight)
            if uplink.rate_limit is not None:
                burst = uplink.burst or max(config.batch_size, int(uplink.rate_limit))
                self._buckets[tenant] = TokenBucket(uplink.rate_limit, burst)
        context.subscribe_batches(
            None,
            self._handle,
            max_batch=config.batch_size,
            max_wait=config.linger,
            max_bytes=config.max_batch_bytes,
            name=SUBSCRIPTION,
            tenants=chosen,
        )

    async def on_enable(self) -> None:
        config = self._config
        assert config is not None
        circuits: dict[str, Circuit] = {}
        # One TLS context for every tenant's client: each client would otherwise load the CA bundle into a context
        # of its own (~0.9 MB per tenant, docs/performance.md "Memory."); the same trust settings as httpx's own.
        tls = httpx.create_ssl_context()
        for tenant, (secret, key) in self._secrets.items():
            uplink = config.tenants[tenant]
            endpoint = config.endpoint_of(tenant)
            circuit = circuits.setdefault(
                endpoint, Circuit(config.backoff_base, config.backoff_cap, config.retry_after_cap)
            )
            client = AsyncOAuth2Client(
                client_id=uplink.client_id,
                client_secret=secret.decode(),
                scope=uplink.scope,
                token_endpoint=config.token_url_of(tenant),
                grant_type="client_credentials",
                leeway=int(config.token_leeway),
                timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
                limits=httpx.Limits(max_connections=2, max_keepalive_connections=2, keepalive_expiry=30.0),
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT, "X-Edge-Gateway": self._gateway},
                verify=tls,
            )
            self._uplinks[tenant] = TenantUplink(
                tenant,
                endpoint=endpoint,
                client=client,
                hmac_key=key,
                hmac_key_id=uplink.hmac_key_id,
                circuit=circuit,
                gzip_level=config.gzip_level,
                retry_after_cap=config.retry_after_cap,
            )

    async def on_disable(self) -> None:
        for uplink in self._uplinks.values():
            await uplink.close()
        self._uplinks.clear()

    async def on_health_check(self) -> Health:
        failing = {t: u.stats.last_error for t, u in self._uplinks.items() if _failing(u.stats)}
        detail = "; ".join(
            f"{t}: {'failing (' + str(failing[t]) + ')' if t in failing else 'ok'}, {u.stats.events} events"
            for t, u in sorted(self._uplinks.items())
        )
        return Health(not failing, detail)

    # ---- the batch handler -------------------------------------------------------------------------------

    async def _handle(self, batch: Sequence[StoredEvent]) -> Rejected | None:
        tenant = current_tenant().tenant_id
        uplink = self._uplinks[tenant]
        bucket = self._buckets.get(tenant)
        if bucket is not None:
            await bucket.take(len(batch))
        async with self._scheduler.turn(tenant, len(batch)):
            return await uplink.deliver(batch)

    def stats(self) -> dict[str, UplinkStats]:
        """Per-tenant upload counters (requests, events, bytes, retries, token fetches, dead letters)."""
        return {tenant: uplink.stats for tenant, uplink in self._uplinks.items()}

    @property
    def scheduler(self) -> FairScheduler:
        return self._scheduler


def _failing(stats: UplinkStats) -> bool:
    """Failing: the last attempt failed and nothing succeeded in the last 5 minutes."""
    if stats.last_error is None:
        return False
    return stats.last_success is None or time.time() - stats.last_success > 300
