"""Liveness, the gateway's status (the StatusSnapshot `edge run --status` prints) and the console's overview."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from edge.api.auth import Principal
from edge.api.deps import Caller, State, TenantQuery, Viewer, principal, resolve_tenant
from edge.ops.status import DownlinkStatus
from edge.sdk.certs import load_certificate

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
    downlink: DownlinkStatus | None = Field(
        default=None, description="The tenant's link to its platform; null without a [tenants.cloud]."
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
        downlink=snapshot.downlink.get(caller.tenant),
    ).model_dump()


class SiteHealth(BaseModel):
    site: str
    devices: int
    up: int
    down: int


class ModuleHealth(BaseModel):
    name: str
    state: str
    healthy: bool


class Certificate(BaseModel):
    use: str
    path: str
    not_after: str
    days_left: float


class Overview(BaseModel):
    tenant: str
    uptime: float
    bus_connected: bool
    sites: list[SiteHealth]
    points_read: int = Field(
        description="Points read with a usable value since the start; its rate: points/s."
    )
    outbox_events: int
    outbox_bytes: int
    backlogs: dict[str, int] = Field(
        description="Per consumer (mqtt, module:..., webhook:...): events not taken."
    )
    modules: list[ModuleHealth]
    certificates: list[Certificate]
    downlink: DownlinkStatus | None = Field(
        default=None,
        description="The tenant's link to its platform and the age of its last entitlement answer; null "
        "without a [tenants.cloud].",
    )


@router.get(
    "/v1/overview", summary="The console's overview: the tenant's sites, backlogs, modules, certificates"
)
async def overview(state: State, caller: Viewer) -> Overview:
    services = state.services
    mine = [d for d in services.loaded.devices if d.tenant == caller.tenant]
    sites: dict[str, SiteHealth] = {}
    points = 0
    for spec in mine:
        site = sites.setdefault(spec.site, SiteHealth(site=spec.site, devices=0, up=0, down=0))
        stats = services.stats.devices.get(spec.name)
        site.devices += 1
        site.up += 1 if stats and stats.up else 0
        site.down += 1 if stats and stats.up is False else 0
        points += stats.points_read if stats else 0
    outbox = next(o for o in await services.outboxes() if o.tenant == caller.tenant)
    health = await services.modules.health()
    modules = [
        ModuleHealth(name=name, state=hosted.state.value, healthy=bool(health.get(name) and health[name].ok))
        for name, hosted in services.modules.modules.items()
        if hosted.context and caller.tenant in [t.tenant_id for t in hosted.context.tenants]
    ]
    return Overview(
        tenant=caller.tenant,
        uptime=time.monotonic() - services.stats.started,
        bus_connected=services.bus.connected,
        sites=sorted(sites.values(), key=lambda s: s.site),
        points_read=points,
        outbox_events=outbox.events,
        outbox_bytes=outbox.bytes,
        backlogs=outbox.backlogs,
        modules=modules,
        certificates=[_certificate("API and console (HTTPS)", state.tls_cert)] if state.tls_cert else [],
        downlink=services.downlink().get(caller.tenant),
    )


def _certificate(use: str, path: str) -> Certificate:
    cert = load_certificate(Path(path))
    until = cert.not_valid_after_utc
    left = (until - datetime.now(UTC)).total_seconds() / 86_400
    return Certificate(use=use, path=path, not_after=until.isoformat(), days_left=round(left, 1))
