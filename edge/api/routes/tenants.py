"""Tenants served by the gateway, their entitlements and their MQTT users (admin only).

Changing entitlements edits the configuration file (comments kept, validated first: edge.config.edit), so the
change outlives a restart, and applies it to the running gateway at once (ApiServices.set_entitlements).
MQTT users go through the same store and broker reload as `edge tenant credentials` (edge.bus.access)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from edge.api.deps import Admin, State
from edge.api.problems import PROBLEM_RESPONSES, Problem
from edge.bus.access import AccessError, AccessStore, MqttUser
from edge.bus.broker import BrokerError, apply_access
from edge.config.edit import change_entitlements
from edge.sdk.errors import ConfigError

router = APIRouter(prefix="/v1", tags=["tenants"], responses=PROBLEM_RESPONSES)


TenantId = Annotated[str, Path(description="Tenant id.")]


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


class MqttUserInfo(BaseModel):
    username: str
    name: str
    read_only: bool
    created: float
    rotated: float | None


class NewMqttUser(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    read_only: bool = False


class MqttCredentials(MqttUserInfo):
    password: str = Field(description="Shown this once; only its hash is kept.")
    applied: str = Field(description="Whether the broker took the change at once.")


def _access(state: State, tenant: str) -> AccessStore:
    if tenant not in state.services.tenants:
        raise Problem(404, f"tenant {tenant!r} is not served by this gateway", tenant=tenant)
    loaded = state.services.loaded
    return AccessStore(loaded.data_dir / "broker", loaded.config.bus.topic_prefix)


def _user(user: MqttUser) -> dict[str, Any]:
    return {
        "username": user.username, "name": user.name, "read_only": user.read_only, "created": user.created,
        "rotated": user.rotated,
    }  # fmt: skip


async def _applied(state: State, store: AccessStore) -> str:
    loaded = state.services.loaded
    try:
        return await asyncio.to_thread(apply_access, store, loaded.data_dir, loaded.config.bus.mode)
    except BrokerError as exc:
        return f"saved, but not applied yet: {exc}"


@router.get("/tenants/{tenant}/mqtt-users", summary="A tenant's MQTT users, never their passwords (admin)")
async def mqtt_users(state: State, admin: Admin, tenant: TenantId) -> list[MqttUserInfo]:
    return [MqttUserInfo(**_user(u)) for u in _access(state, tenant).users(tenant)]


@router.post(
    "/tenants/{tenant}/mqtt-users",
    summary="Create an MQTT user NAME@TENANT; the answer shows its password once (admin)",
    status_code=201,
)
async def add_mqtt_user(state: State, admin: Admin, tenant: TenantId, body: NewMqttUser) -> MqttCredentials:
    store = _access(state, tenant)
    try:
        user, password = store.add(tenant, body.name, read_only=body.read_only)
    except AccessError as exc:
        raise Problem(422, str(exc), tenant=tenant) from None
    return MqttCredentials(**_user(user), password=password, applied=await _applied(state, store))


@router.post(
    "/tenants/{tenant}/mqtt-users/{name}/rotate",
    summary="A new password for an MQTT user, shown once; the old one stops working (admin)",
)
async def rotate_mqtt_user(
    state: State, admin: Admin, tenant: TenantId, name: Annotated[str, Path(description="User name.")]
) -> MqttCredentials:
    store = _access(state, tenant)
    try:
        user, password = store.rotate(tenant, name)
    except AccessError as exc:
        raise Problem(404, str(exc), tenant=tenant) from None
    return MqttCredentials(**_user(user), password=password, applied=await _applied(state, store))
