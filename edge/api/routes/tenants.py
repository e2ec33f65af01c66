"""Tenants served by the gateway and their entitlements (admin only).

Changing entitlements edits the configuration file (comments kept, validated first: edge.config.edit), so the
change outlives a restart, and applies it to the running gateway at once (ApiServices.set_entitlements)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from edge.api.deps import Admin, State
from edge.api.problems import PROBLEM_RESPONSES, Problem
from edge.config.edit import change_entitlements
from edge.sdk.errors import ConfigError

router = APIRouter(prefix="/v1", tags=["tenants"], responses=PROBLEM_RESPONSES)


class Entitlements(BaseModel):
    entitlements: list[str] = Field(max_length=256)


class TenantInfo(BaseModel):
    id: str
    name: str
    locale: str
    entitlements: list[str]
    devices: int


def _info(state: State, tenant: str) -> TenantInfo:
    config = next(t for t in state.services.loaded.config.tenants if t.id == tenant)
    context = state.services.tenants[tenant]
    return TenantInfo(
        id=tenant,
        name=config.name,
        locale=context.locale,
        entitlements=sorted(context.entitlements),
        devices=sum(1 for d in state.services.loaded.devices if d.tenant == tenant),
    )


@router.get("/tenants", summary="Every tenant of the gateway with its entitlements (admin)")
async def list_tenants(state: State, admin: Admin) -> list[TenantInfo]:
    return [_info(state, t) for t in state.services.tenants]


@router.get("/tenants/{tenant}", summary="One tenant with its entitlements (admin)")
async def get_tenant(
    state: State, admin: Admin, tenant: Annotated[str, Path(description="Tenant id.")]
) -> TenantInfo:
    if tenant not in state.services.tenants:
        raise Problem(404, f"tenant {tenant!r} is not served by this gateway", tenant=tenant)
    return _info(state, tenant)


@router.put(
    "/tenants/{tenant}/entitlements",
    summary="Set a tenant's entitlement flags, live and in the config (admin)",
)
async def set_entitlements(
    state: State, admin: Admin, body: Entitlements, tenant: Annotated[str, Path(description="Tenant id.")]
) -> TenantInfo:
    services = state.services
    if tenant not in services.tenants:
        raise Problem(404, f"tenant {tenant!r} is not served by this gateway", tenant=tenant)
    wanted = list(dict.fromkeys(body.entitlements))
    current = sorted(services.tenants[tenant].entitlements)
    try:
        await asyncio.to_thread(
            change_entitlements,
            services.loaded.path,
            tenant,
            add=wanted,
            remove=[f for f in current if f not in wanted],
        )
    except ConfigError as exc:
        raise Problem(422, f"the configuration would be invalid: {exc}", tenant=tenant) from None
    await services.set_entitlements(tenant, wanted)
    return _info(state, tenant)
