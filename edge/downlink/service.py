"""The downlink of every tenant with a `[tenants.cloud]`: one long-poll per tenant, one dispatcher.

Each message is verified (edge.downlink.signing), its id recorded as seen before anything happens (a replay
is refused, even after a restart), then executed: point writes and module commands through the command path
(edge.downlink.commands), deployments (edge.downlink.deploy), pushed entitlements (edge.downlink.entitlements).
Every outcome, refusals included, becomes an `org.edgegw.cloud.result` event for the tenant, appended durably
to the outbox: the uplink (cloud_sync) carries it back at least once, in outbox order.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from edge.config import LoadedConfig
from edge.config.history import ConfigHistory
from edge.config.secrets import SecretError, resolve
from edge.downlink.commands import CommandServices, Outcome, execute
from edge.downlink.deploy import Deployer, DeployServices
from edge.downlink.entitlements import EntitlementService
from edge.downlink.ledger import DownlinkLedger
from edge.downlink.link import TenantLink
from edge.downlink.signing import KeyRing, Refused, Verifier, utc
from edge.ops.status import DownlinkStatus
from edge.sdk.events import CLOUD_RESULT, Event, make_event
from edge.sdk.tenancy import TenantContext, tenant_scope

__all__ = ["Downlink", "DownlinkServices"]

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 3600.0  # seconds between forgetting the ids of expired messages


@dataclass(frozen=True)
class DownlinkServices:
    """What the downlink may do to the gateway (wired by edge.gateway; nothing else reaches it)."""

    commands: CommandServices
    deploy: DeployServices
    set_entitlements: Callable[[str, Iterable[str]], Awaitable[None]]
    append: Callable[[Event], Awaitable[int]]  # OutboxStore.append_durable
    tenant: Callable[[str], TenantContext]


class Downlink:
    def __init__(self, loaded: LoadedConfig, services: DownlinkServices, history: ConfigHistory) -> None:
        self._loaded = loaded
        self._services = services
        self._history = history
        config = loaded.config
        self._gateway = config.gateway.id
        self._source = f"/{self._gateway}/downlink"
        self.ledger = DownlinkLedger(loaded.data_dir)
        self.links: dict[str, TenantLink] = {}
        self._verifiers: dict[str, Verifier] = {}
        self._scopes: dict[str, str] = {}
        base = loaded.path.parent
        for tenant in config.tenants:
            cloud = tenant.cloud
            if cloud is None:
                continue
            try:
                secret = resolve(cloud.client_secret, base, private=False)
                keys = KeyRing([base / path for path in cloud.key_paths])
            except (SecretError, ValueError) as exc:
                log.error("tenant %s: downlink not started: %s", tenant.id, exc)
                continue
            self._verifiers[tenant.id] = Verifier(
                tenant.id, self._gateway, keys, leeway=config.cloud.clock_leeway
            )
            self.links[tenant.id] = TenantLink(
                tenant.id, cloud, config.cloud, self._gateway, secret, self.ledger
            )
            self._scopes[tenant.id] = cloud.deployments
        entitled = {t.id for t in config.tenants if t.cloud and t.cloud.entitlements and t.id in self.links}
        self.entitlements = EntitlementService(
            {t: self.links[t] for t in entitled},
            self._verifiers,
            self.ledger,
            services.set_entitlements,
            interval=config.cloud.entitlement_interval,
            max_age=config.cloud.entitlement_max_age,
        )
        self._deployer = Deployer(services.deploy)

    @property
    def platform_entitled(self) -> set[str]:
        """Tenants whose entitlements the platform decides (file edits leave them alone)."""
        return set(self.entitlements.tenants)

    async def start(self) -> None:
        """Before modules start: the last entitlement answers apply, and a deployment a killed gateway left
        half-done (already undone in the file) is reported."""
        await self.entitlements.restore()
        interrupted = self._history.interrupted()
        if interrupted is not None and interrupted.tenant in self.links:
            reason = "the gateway stopped mid-deployment; restored the configuration before it"
            claims = {"jti": interrupted.jti, "kind": "deployment"}
            await self._report(interrupted.tenant, claims, Outcome("rolled_back", reason, interrupted.label))
        if interrupted is not None:
            self._history.end()

    def tasks(self) -> list[tuple[Callable[[], Coroutine[Any, Any, None]], str]]:
        """The long-running parts, for the gateway's supervisor: (coroutine function, task name)."""
        out: list[tuple[Callable[[], Coroutine[Any, Any, None]], str]] = [
            (functools.partial(link.run, self.dispatch), f"downlink-{tenant}")
            for tenant, link in self.links.items()
        ]
        if self.entitlements.tenants:
            out.append((self.entitlements.run, "entitlements"))
        out.append((self._prune, "downlink-prune"))
        return out

    def status(self) -> dict[str, DownlinkStatus]:
        """Each tenant's link and the platform's last entitlement answer (the gateway's status snapshot)."""
        answers = self.entitlements.status()
        out = {}
        for tenant, link in self.links.items():
            stats, answer = link.stats, answers.get(tenant, {})
            out[tenant] = DownlinkStatus(
                state="connected" if stats.connected else "retrying" if stats.failures else "starting",
                since=stats.since,
                last_error=stats.last_error,
                failures=stats.failures,
                last_message=stats.last_message,
                last_message_at=stats.last_message_at,
                entitlements=answer.get("flags"),
                entitlements_age=answer.get("age_s"),
                entitlements_lapsed=bool(answer.get("lapsed")),
            )
        return out

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()
        self.ledger.close()

    async def dispatch(self, tenant: str, token: str) -> None:
        """Verify one message, then act on it; every outcome is reported as an event."""
        try:
            claims = self._verifiers[tenant].verify(token)
            first = self.ledger.first_sight(tenant, claims["jti"], float(claims["exp"]))
            if first is not None:
                raise Refused(f"replayed: id {claims['jti']!r} was first seen at {utc(first)}", claims)
        except Refused as exc:
            log.warning(
                "tenant %s: downlink message %s refused: %s", tenant, exc.claims.get("jti"), exc.reason
            )
            self.links[tenant].stats.message(exc.claims.get("jti"))
            await self._report(tenant, exc.claims, Outcome("refused", exc.reason))
            return
        self.links[tenant].stats.message(claims["jti"])
        outcome = await self._act(tenant, claims)
        await self._report(tenant, claims, outcome)

    async def _act(self, tenant: str, claims: dict[str, Any]) -> Outcome:
        kind = claims["kind"]
        if kind in ("point.write", "module.command"):
            return await execute(self._services.commands, tenant, claims)
        if kind == "deployment":
            scope = self._scopes[tenant]
            if scope == "off":
                return Outcome(
                    "refused", f"tenant {tenant} does not accept deployments (deployments = 'off')"
                )
            return await self._deployer.deploy(tenant, scope, claims)
        if tenant not in self.entitlements.tenants:
            return Outcome(
                "refused", f"tenant {tenant}'s entitlements come from the file (entitlements = false)"
            )
        try:
            flags = await self.entitlements.apply(tenant, claims)
        except Refused as exc:
            return Outcome("refused", exc.reason)
        return Outcome("done", None, None, {"entitlements": list(flags)})

    async def _report(self, tenant: str, claims: dict[str, Any], outcome: Outcome) -> None:
        kind = claims.get("kind")
        data = {
            "id": claims.get("jti"),
            "kind": kind,
            "status": outcome.status,
            "ok": outcome.ok,
            "reason": outcome.reason,
            "target": outcome.target,
            "detail": outcome.detail,
        }
        if kind == "point.write" and isinstance(claims.get("device"), str):
            subject = f"{claims.get('site')}/{claims['device']}"
        elif kind == "module.command":
            subject = f"module/{claims.get('module')}"
        else:
            subject = "config" if kind == "deployment" else "downlink"
        event = make_event(
            type=CLOUD_RESULT,
            source=self._source,
            subject=subject,
            tenant=tenant,
            time=time.time(),
            data=data,
        )
        with tenant_scope(self._services.tenant(tenant)):
            await self._services.append(event)

    async def _prune(self) -> None:
        while True:
            await asyncio.to_thread(self.ledger.forget_expired, time.time() - 3600.0)
            await asyncio.sleep(PRUNE_INTERVAL)
