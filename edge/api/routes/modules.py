"""Modules hosted by the gateway, with their lifecycle state and health (ModuleHost).

What is whose: a module's name, version, lifecycle state and whether its health check passes are facts about
the module, shown to every tenant it serves. Its counters (events handled, handler errors, retries, dead
letters), its health text and its error text are gateway-wide: they add up and describe every tenant's
traffic, so only admins see them; a tenant's viewer gets null there.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from edge.api.deps import Operator, State, Viewer
from edge.api.limits import body_limit
from edge.api.live import EventFilter
from edge.api.problems import PROBLEM_RESPONSES, Problem
from edge.module_host.commands import ModuleCommandRejected
from edge.sdk.events import MODULE_COMMAND_RESULT

router = APIRouter(prefix="/v1", tags=["modules"], responses=PROBLEM_RESPONSES)
_ANSWER_WITHIN = 15.0  # seconds a module has to answer a command
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


class CommandBody(BaseModel):
    args: dict[str, Any] = Field(default_factory=dict, description="The action's arguments.")


class CommandAnswer(BaseModel):
    request_id: str
    ok: bool
    reason: str | None
    result: dict[str, Any]


@router.post(
    "/modules/{module}/commands/{action}",
    summary="Send a module a command for the caller's tenant and wait for its answer (operator), e.g. "
    "alarms list / ack: the same path as `edge module command` and MQTT",
    openapi_extra=body_limit(16_384),
    responses={504: PROBLEM_RESPONSES[503] | {"description": "The module did not answer in time"}},
)
async def module_command(
    state: State,
    caller: Operator,
    body: CommandBody,
    module: Annotated[str, Path(description="Module name.")],
    action: Annotated[str, Path(description="The module's action.")],
) -> CommandAnswer:
    request_id = str(uuid.uuid4())
    answers = state.feed.subscribe(caller.tenant, EventFilter(frozenset({MODULE_COMMAND_RESULT})))
    try:
        try:
            await state.services.submit_module_command(caller.tenant, module, action, body.args, request_id)
        except ModuleCommandRejected as exc:
            raise Problem(422, f"command refused: {exc.reason}", module=module) from None
        except RuntimeError as exc:
            raise Problem(503, str(exc)) from None
        async with asyncio.timeout(_ANSWER_WITHIN):
            while True:
                data = (await answers.queue.get()).data or {}
                if data.get("request_id") == request_id:
                    return CommandAnswer(
                        request_id=request_id, ok=bool(data.get("ok")), reason=data.get("reason"),
                        result=data.get("result") or {},
                    )  # fmt: skip
    except TimeoutError:
        raise Problem(504, f"module {module!r} did not answer within {_ANSWER_WITHIN:g} s") from None
    finally:
        state.feed.unsubscribe(answers)
