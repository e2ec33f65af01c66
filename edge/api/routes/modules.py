"""Modules hosted by the gateway, with their lifecycle state and health (ModuleHost)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from edge.api.deps import State, Viewer
from edge.api.problems import PROBLEM_RESPONSES

router = APIRouter(prefix="/v1", tags=["modules"], responses=PROBLEM_RESPONSES)


class ModuleInfo(BaseModel):
    name: str
    version: str
    state: str
    healthy: bool
    detail: str
    error: str | None
    tenants: list[str]
    handled: int
    handler_errors: int
    retries: int
    dead_lettered: int


@router.get("/modules", summary="Modules serving the caller's tenant (admins: all), with state and health")
async def list_modules(state: State, caller: Viewer) -> list[ModuleInfo]:
    host = state.services.modules
    health = await host.health()
    admin = caller.principal.role == "admin"
    out = []
    for name, hosted in host.modules.items():
        tenants = [t.tenant_id for t in hosted.context.tenants] if hosted.context else []
        if not admin and caller.tenant not in tenants:
            continue
        verdict = health.get(name)
        out.append(
            ModuleInfo(
                name=name,
                version=hosted.plugin.manifest.version,
                state=hosted.state.value,
                healthy=bool(verdict and verdict.ok),
                detail=verdict.detail if verdict else "",
                error=hosted.error,
                tenants=tenants if admin else [caller.tenant],
                handled=hosted.handled,
                handler_errors=hosted.handler_errors,
                retries=hosted.retries,
                dead_lettered=hosted.dead_lettered,
            )
        )
    return out
