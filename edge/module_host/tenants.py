"""The gateway's tenants and their entitlement flags as of now: the one owner, shared by the module host, its
control (config file edits) and the gateway (REST API, `edge tenant entitle|revoke`).

A change goes through `set_entitlements`, which replaces the tenant's `TenantContext` and tells every
listener `(old, new)` in the order they registered: the module host first (it re-routes in-process modules
and their ticks), then the sidecar server (isolated modules). Everyone else reads the registry, never a copy.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import replace

from edge.sdk.tenancy import TenantContext

log = logging.getLogger(__name__)

# (old, new) -> None, or an awaitable the registry awaits before telling the next listener
EntitlementListener = Callable[[TenantContext, TenantContext], Awaitable[None] | None]


class Tenants(Mapping[str, TenantContext]):
    """Tenant id -> its `TenantContext` (with its entitlements as of now)."""

    def __init__(self, tenants: Iterable[TenantContext]) -> None:
        self._tenants = {t.tenant_id: t for t in tenants}
        self._listeners: list[EntitlementListener] = []

    def __getitem__(self, tenant_id: str) -> TenantContext:
        return self._tenants[tenant_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tenants)

    def __len__(self) -> int:
        return len(self._tenants)

    def entitled(self, entitlement: str | None) -> list[TenantContext]:
        """The tenants that may use a plug-in needing `entitlement` (None: every tenant), as of now."""
        return [t for t in self._tenants.values() if t.entitled(entitlement)]

    def listen(self, listener: EntitlementListener) -> None:
        """Call `listener(old, new)` after each change of a tenant's entitlements."""
        self._listeners.append(listener)

    async def set_entitlements(self, tenant_id: str, flags: Iterable[str]) -> None:
        """Change a tenant's entitlement flags live (logged; nothing happens when they are the same).
        Raises KeyError for a tenant not served here."""
        old = self._tenants[tenant_id]
        new = replace(old, entitlements=frozenset(flags))
        if new.entitlements == old.entitlements:
            return
        self._tenants[tenant_id] = new
        log.info(
            "tenant %s entitlements changed: %s -> %s",
            tenant_id,
            sorted(old.entitlements),
            sorted(new.entitlements),
        )
        for listener in self._listeners:
            outcome = listener(old, new)
            if inspect.isawaitable(outcome):
                await outcome
