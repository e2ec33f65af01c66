"""Modules hosted by the gateway, with their lifecycle state and health (ModuleHost).

What is whose: a module's name, version, lifecycle state and whether its health check passes are facts about
the module, shown to every tenant it serves. Its counters (events handled, handler errors, retries, dead
letters), its health text and its error text are gateway-wide: they add up and describe every tenant's
traffic, so only admins see them; a tenant's viewer gets null there.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from edge.api.deps import State, Viewer
from edge.api.problems import PROBLEM_RESPONSES

router = APIRouter(prefix="/v1", tags=["modules"], responses=PROBLEM_RESPONSES)
_ADMINS_ONLY = "Gateway-wide (every tenant's traffic): admins only, null for a tenant's viewer."


class ModuleInfo(BaseModel):
    name: str
    version: str
    state: str
    healthy: bool = Field(description="Whether the module's health check passes (the module as a whole).")
    detail: str | None = Field(description=f"Health text. {_ADMINS_ONLY}")
    error: str | None = Field(description=f"Why it failed, if it did. {_ADMINS_ONLY}")
    tenants: list[str] = Field(description="Tenants it serves; a tenant's viewer sees only its own.")
    handled: int | None = Field(description=_ADMINS_ONLY)
    handler_errors: int | None = Field(description=_ADMINS_ONLY)
    retries: int | None = Field(description=_ADMINS_ONLY)
    dead_lettered: int | None = Field(description=_ADMINS_ONLY)


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
        info = ModuleInfo(
            name=name,
            version=hosted.plugin.manifest.version,
            state=hosted.state.value,
            healthy=bool(verdict and verdict.ok),
            detail=None,
            error=None,
            tenants=[caller.tenant],
            handled=None,
            handler_errors=None,
            retries=None,
            dead_lettered=None,
        )
        if admin:
            info = info.model_copy(
                update={
                    "detail": verdict.detail if verdict else "",
                    "error": hosted.error,
                    "tenants": tenants,
                    "handled": hosted.handled,
                    "handler_errors": hosted.handler_errors,
                    "retries": hosted.retries,
                    "dead_lettered": hosted.dead_lettered,
                }
            )
        out.append(info)
    return out
