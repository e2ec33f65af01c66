"""Tenant context: who the current work is for.

The kernel sets the context (`tenant_scope`) around every poll, event, storage call and request; code below
reads it with `current_tenant()`. Tenant-owned data cannot be read or written without one: the storage layer
calls `current_tenant()` in exactly one place (`edge.outbox.schema.tenant_filter`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from edge.sdk.errors import NoTenantContext

__all__ = [
    "TenantContext",
    "current_tenant",
    "maybe_tenant",
    "tenant_scope",
]


@dataclass(frozen=True, slots=True)
class TenantContext:
    tenant_id: str
    locale: str = "en"
    entitlements: frozenset[str] = field(default_factory=frozenset)

    def entitled(self, flag: str | None) -> bool:
        return flag is None or flag in self.entitlements


_current: ContextVar[TenantContext | None] = ContextVar("edge_tenant", default=None)


def current_tenant() -> TenantContext:
    ctx = _current.get()
    if ctx is None:
        raise NoTenantContext("tenant data accessed outside a tenant context")
    return ctx


def maybe_tenant() -> TenantContext | None:
    return _current.get()


@contextmanager
def tenant_scope(ctx: TenantContext) -> Iterator[TenantContext]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
