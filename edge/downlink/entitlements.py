"""The entitlement service: per tenant, the platform decides which modules the tenant gets.

The gateway asks `{url}/v1/entitlements/{tenant}` at start, whenever a module loads, and every
`entitlement_interval`; the platform may also push an `entitlements` message down the long-poll, so a
revocation takes effect at once. Each answer is a signed JWS (edge.downlink.signing) and drives routing live
through the one tenant registry, exactly as `edge tenant entitle|revoke` does (`Gateway.set_entitlements`).
The last answer is kept (edge.downlink.ledger): at start it applies before any module starts, and while the
platform is unreachable it holds; past `entitlement_max_age` (when configured) the tenant's entitlements
lapse until the platform answers again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from edge.downlink.ledger import DownlinkLedger, EntitlementAnswer
from edge.downlink.link import LinkDown, TenantLink
from edge.downlink.signing import Refused, Verifier

__all__ = ["EntitlementService", "parse_flags"]

log = logging.getLogger(__name__)

_FLAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
SetEntitlements = Callable[[str, Iterable[str]], Awaitable[None]]


def parse_flags(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The flags of an entitlement answer; raises Refused naming what is wrong."""
    flags = claims.get("entitlements")
    if not isinstance(flags, list) or not all(isinstance(f, str) and _FLAG.match(f) for f in flags):
        raise Refused("'entitlements' must be a list of flag names", dict(claims))
    return tuple(dict.fromkeys(flags))


class EntitlementService:
    def __init__(
        self,
        links: Mapping[str, TenantLink],
        verifiers: Mapping[str, Verifier],
        ledger: DownlinkLedger,
        set_entitlements: SetEntitlements,
        *,
        interval: float,
        max_age: float | None,
    ) -> None:
        self._links = links
        self._verifiers = verifiers
        self._ledger = ledger
        self._set = set_entitlements
        self._interval = interval
        self._max_age = max_age
        self._asked = asyncio.Event()
        self.lapsed: set[str] = set()
        self.last_error: dict[str, str] = {}

    @property
    def tenants(self) -> list[str]:
        return sorted(self._links)

    async def restore(self) -> None:
        """Apply each tenant's last answer (before the modules start), unless it is too old to hold."""
        for tenant in self.tenants:
            answer = self._ledger.entitlements(tenant)
            if answer is None:
                log.info("tenant %s: no entitlement answer yet; the file's flags hold until one", tenant)
            elif self._too_old(answer):
                await self._lapse(tenant, answer)
            else:
                await self._set(tenant, answer.flags)

    def module_loaded(self, module: str) -> None:
        """A module is starting: ask the platform again (its answer may name the new module)."""
        self._asked.set()

    async def run(self) -> None:
        while True:
            self._asked.clear()
            for tenant in self.tenants:
                await self.refresh(tenant)
            try:
                async with asyncio.timeout(self._interval):
                    await self._asked.wait()
            except TimeoutError:
                pass

    async def refresh(self, tenant: str) -> None:
        """Ask the platform; apply its answer, or keep the last one (lapsing it past max_age)."""
        try:
            token = await self._links[tenant].entitlements()
            claims = self._verifiers[tenant].verify(token)
            if claims["kind"] != "entitlements":
                raise Refused(f"the entitlement endpoint answered a {claims['kind']!r} message", claims)
            await self.apply(tenant, claims)
        except (LinkDown, Refused) as exc:
            reason = exc.reason
            if self.last_error.get(tenant) != reason:
                log.warning(
                    "tenant %s: entitlements not refreshed: %s (the last answer holds)", tenant, reason
                )
            self.last_error[tenant] = reason
            answer = self._ledger.entitlements(tenant)
            if answer is not None and tenant not in self.lapsed and self._too_old(answer):
                await self._lapse(tenant, answer)

    async def apply(self, tenant: str, claims: Mapping[str, Any]) -> tuple[str, ...]:
        """A verified answer (fetched or pushed): persisted first, then routing follows it."""
        flags = parse_flags(claims)
        self._ledger.save_entitlements(tenant, flags, str(claims["jti"]))
        self.last_error.pop(tenant, None)
        if tenant in self.lapsed:
            log.info("tenant %s: the platform answered again; entitlements restored", tenant)
            self.lapsed.discard(tenant)
        await self._set(tenant, flags)
        return flags

    def _too_old(self, answer: EntitlementAnswer) -> bool:
        return self._max_age is not None and answer.age(time.time()) > self._max_age

    async def _lapse(self, tenant: str, answer: EntitlementAnswer) -> None:
        log.error(
            "tenant %s: the platform's last entitlement answer is %.0f s old, beyond entitlement_max_age "
            "(%.0f s): its entitlements lapse until the platform answers",
            tenant,
            answer.age(),
            self._max_age or 0,
        )
        self.lapsed.add(tenant)
        await self._set(tenant, ())

    def status(self) -> dict[str, dict[str, Any]]:
        """Per tenant: flags, age of the answer, lapsed, last error (status snapshot, `edge status`)."""
        out = {}
        for tenant in self.tenants:
            answer = self._ledger.entitlements(tenant)
            out[tenant] = {
                "flags": list(answer.flags) if answer else None,
                "age_s": round(answer.age(), 1) if answer else None,
                "lapsed": tenant in self.lapsed,
                "last_error": self.last_error.get(tenant),
            }
        return out
