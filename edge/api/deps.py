"""The request's context as FastAPI dependencies: the API's state, the caller and the tenant it acts for.

The caller is a bearer token's (`Authorization` header) or, without that header, a console session's (its
cookie; a state-changing request must also carry the session's CSRF token, edge.api.sessions). Both give a
`Principal`, and everything after this point treats them alike.
`role(...)` (`Viewer`, `Operator`) authenticates the caller and resolves the tenant: the token's own, or for an admin the one
named by `?tenant=`. A non-admin naming another tenant is refused (403), so no route can be asked for another
tenant's data. The rest of the request runs inside `tenant_scope(caller.context)`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edge.api.accounts import AccountStore
from edge.api.auth import FailureLimiter, OidcVerifier, Principal, Role, unauthorized
from edge.api.counting import RequestCounts
from edge.api.live import LatestValues, LiveFeed
from edge.api.oidc_sign_in import OidcSignIn
from edge.api.problems import Problem
from edge.api.services import ApiServices
from edge.api.sessions import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE, Session, SessionStore
from edge.sdk.tenancy import TenantContext, tenant_scope


@dataclass
class ApiState:
    services: ApiServices
    verifier: OidcVerifier | None  # None: no issuer configured, callers sign in with local accounts
    latest: LatestValues
    feed: LiveFeed
    sessions: SessionStore
    accounts: AccountStore
    sign_in_limiter: FailureLimiter  # counts per (client address, account name)
    tls_cert: str | None = None  # the API's HTTPS certificate; the session cookie is Secure with it
    requests: RequestCounts = field(default_factory=RequestCounts)  # for /metrics
    # password checks at once (each spends ~64 MiB and a few hundred ms of CPU in a thread): a flood of
    # sign-ins under many names queues here instead of taking every core
    hashing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    oidc_sign_in: OidcSignIn | None = None  # the console's sign-in at the issuer, when it has a client id
    discoveries: dict[str, Any] = field(default_factory=dict)  # id -> DiscoveryJob (routes.commissioning)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    context: TenantContext

    @property
    def tenant(self) -> str:
        return self.context.tenant_id


async def api_state(request: Request) -> ApiState:
    # async on purpose: FastAPI runs a plain `def` dependency in a worker thread, and that hop (a thread
    # wake-up, two GIL hand-overs, a wake-up of the loop) cost every request more than the lookup itself
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


def client_address(request: Request) -> str:
    return request.client.host if request.client else "-"  # behind a trusted proxy: X-Forwarded-For


async def authenticate_token(state: ApiState, token: str | None, client: str) -> Principal:
    if state.verifier is None:
        raise unauthorized(
            "this gateway has no token issuer: sign in with a local account (POST /v1/session)"
        )
    return await state.verifier.authenticate(token, client)


def session_of(state: ApiState, request: Request) -> Session:
    """The request's console session (Problem 401 without a live one; 403 for a change without its CSRF
    token)."""
    session = state.sessions.get(request.cookies.get(SESSION_COOKIE))
    if request.method not in SAFE_METHODS:
        state.sessions.check_csrf(session, request.headers.get(CSRF_HEADER))
    return session


async def principal(
    request: Request, state: State, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
) -> Principal:
    client = client_address(request)
    header = request.headers.get("authorization")
    if header is None and SESSION_COOKIE in request.cookies:
        return session_of(state, request).principal
    limiter = state.verifier.limiter if state.verifier else state.sign_in_limiter
    try:
        token = bearer(header)
    except Problem:
        limiter.check(client, header)
        limiter.failed(client, header)
        raise
    return await authenticate_token(state, token, client)


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
