"""The request's context as FastAPI dependencies: the API's state, the caller and the tenant it acts for.

`role(...)` (`Viewer`, `Operator`) authenticates the bearer token and resolves the tenant: the token's own, or for an admin the one
named by `?tenant=`. A non-admin naming another tenant is refused (403), so no route can be asked for another
tenant's data. The rest of the request runs inside `tenant_scope(caller.context)`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edge.api.auth import OidcVerifier, Principal, Role, unauthorized
from edge.api.live import LatestValues, LiveFeed
from edge.api.problems import Problem
from edge.api.services import ApiServices
from edge.sdk.tenancy import TenantContext, tenant_scope


@dataclass
class ApiState:
    services: ApiServices
    verifier: OidcVerifier
    latest: LatestValues
    feed: LiveFeed


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    context: TenantContext

    @property
    def tenant(self) -> str:
        return self.context.tenant_id


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


State = Annotated[ApiState, Depends(api_state)]


def bearer(authorization: str | None) -> str | None:
    """The token of an Authorization header; None without one; Problem 401 for another scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("the Authorization header must be 'Bearer <access token>'")
    return token.strip()


# Declares the bearer scheme in the OpenAPI document; the header itself is read below, for clearer errors.
_BEARER = HTTPBearer(
    auto_error=False, bearerFormat="JWT", description="An access token from the configured OIDC issuer."
)


async def principal(
    request: Request, state: State, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
) -> Principal:
    client = request.client.host if request.client else "-"  # behind a trusted proxy: X-Forwarded-For
    header = request.headers.get("authorization")
    try:
        token = bearer(header)
    except Problem:
        state.verifier.limiter.check(client, header)
        state.verifier.limiter.failed(client, header)
        raise
    return await state.verifier.authenticate(token, client)


def resolve_tenant(state: ApiState, who: Principal, tenant: str | None) -> TenantContext:
    """The tenant a request acts for; raises Problem when the caller may not act for it."""
    wanted = tenant or who.tenant
    if wanted is None:
        raise Problem(400, "this admin token names no tenant: add ?tenant=<id>")
    if wanted != who.tenant and who.role != "admin":
        raise Problem(
            403, f"a {who.role} of tenant {who.tenant!r} cannot act for tenant {wanted!r}", tenant=wanted
        )
    context = state.services.tenants.get(wanted)
    if context is None:
        raise Problem(
            403 if wanted == who.tenant else 404, f"tenant {wanted!r} is not served by this gateway"
        )
    return context


def over_limit(state: ApiState, tenant: str) -> None:
    """Raises Problem 429 when the tenant is over its request rate (counted and logged by the limits)."""
    limits = state.services.limits
    retry = limits.api_request(tenant) if limits is not None else None
    if retry is not None:
        raise Problem(
            429,
            f"tenant {tenant!r} is over its API request limit; retry after {retry:.1f} s",
            headers={"Retry-After": str(max(1, math.ceil(retry)))},
            tenant=tenant,
        )


TenantQuery = Annotated[
    str | None, Query(description="Admins only: the tenant to act for (default: the token's tenant).")
]


def role(needed: Role) -> Callable[..., AsyncIterator[Caller]]:
    """A dependency: the caller, if its role suffices; the rest of the request runs in its tenant's scope
    (storage reads are filtered by it, log lines carry it)."""

    async def dependency(
        state: State, who: Annotated[Principal, Depends(principal)], tenant: TenantQuery = None
    ) -> AsyncIterator[Caller]:
        if not who.has(needed):
            raise Problem(403, f"this needs the {needed} role; the token's role is {who.role}", role=who.role)
        caller = Caller(who, resolve_tenant(state, who, tenant))
        over_limit(state, caller.tenant)
        with tenant_scope(caller.context):
            yield caller

    return dependency


Viewer = Annotated[Caller, Depends(role("viewer"))]
Operator = Annotated[Caller, Depends(role("operator"))]


async def _admin(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if who.role != "admin":
        raise Problem(403, f"this needs the admin role; the token's role is {who.role}", role=who.role)
    return who


Admin = Annotated[Principal, Depends(_admin)]
