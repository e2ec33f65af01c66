"""Liveness and the gateway's status (the StatusSnapshot `edge run --status` prints)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from edge.api.auth import Principal
from edge.api.deps import Caller, State, TenantQuery, principal, resolve_tenant

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    bus_connected: bool


@router.get("/health", summary="Is the gateway process serving (no token needed)")
async def health(state: State) -> Health:
    # Deliberately small and unauthenticated, for probes; edge/ops/health.py may take it over.
    return Health(status="ok", bus_connected=state.services.bus.connected)


class TenantStatus(BaseModel):
    tenant: str
    uptime: float
    devices: int
    devices_up: int
    bus_connected: bool
    live_clients: int
    limits: dict[str, dict[str, Any]] = Field(
        description="Per limit (ingest, mqtt, module_time, webhooks, api, ws_clients, commands, storage): "
        "the limit, its policy (slow or refuse), how often it acted, the units slowed or refused, seconds waited."
    )


@router.get(
    "/v1/status",
    summary="Gateway status: the whole gateway for admins (without ?tenant=), else the tenant's part",
    response_model=dict[str, Any],
)
async def status(
    state: State, who: Annotated[Principal, Depends(principal)], tenant: TenantQuery = None
) -> dict[str, Any]:
    services = state.services
    snapshot = await services.status()
    if who.role == "admin" and tenant is None:
        return {**dataclasses.asdict(snapshot), "live_clients": state.feed.clients()}
    caller = Caller(who, resolve_tenant(state, who, tenant))
    mine = [
        s for s in services.loaded.devices if s.tenant == caller.tenant and s.name in services.stats.devices
    ]
    return TenantStatus(
        tenant=caller.tenant,
        uptime=snapshot.uptime,
        devices=len(mine),
        devices_up=sum(1 for s in mine if services.stats.devices[s.name].up),
        bus_connected=snapshot.bus_connected,
        live_clients=state.feed.clients([caller.tenant]),
        limits=snapshot.limits.get(caller.tenant, {}),
    ).model_dump()
