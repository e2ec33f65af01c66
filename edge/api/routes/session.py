"""Console sign-in: with a local account, `POST /v1/session` opens a session (cookie), `GET` shows it with its
CSRF token, `DELETE` signs out (edge.api.sessions); at the OIDC issuer, `GET /v1/session/oidc/start` leaves
for the issuer and its redirect back to `/v1/session/oidc/callback` opens the session (edge.api.oidc_sign_in).

Failed sign-ins count per (client address, account name) in the API's failure limiter: after
`[api] sign_in_failures` within `sign_in_lockout` seconds that account is refused from that address (429)
without a password check, while other accounts behind the same proxy and the same account from elsewhere
still sign in. Local accounts work beside an OIDC issuer too (bearer tokens for programs, accounts for the
console); a gateway that should know only its issuer's users simply has no local accounts.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from edge.api.auth import Principal
from edge.api.deps import ApiState, State, client_address, session_of
from edge.api.limits import body_limit
from edge.api.oidc_sign_in import STATE_COOKIE, OidcSignIn
from edge.api.problems import PROBLEM_RESPONSES, Problem
from edge.api.sessions import SESSION_COOKIE, Session

router = APIRouter(prefix="/v1", tags=["session"], responses=PROBLEM_RESPONSES)


class SignIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class SessionInfo(BaseModel):
    user: str
    role: str
    tenant: str | None
    csrf_token: str = Field(description="Send it as X-CSRF-Token with every state-changing request.")
    tenants: list[str] = Field(description="Tenants the user may act for.")


def _info(state: ApiState, session: Session) -> SessionInfo:
    who: Principal = session.principal
    tenants = list(state.services.tenants) if who.role == "admin" else [who.tenant or ""]
    return SessionInfo(
        user=session.account or who.subject, role=who.role, tenant=who.tenant, csrf_token=session.csrf,
        tenants=tenants,
    )  # fmt: skip


async def _current(request: Request, state: State) -> Session:  # async: no worker thread (edge.api.deps)
    return session_of(state, request)


@router.post("/session", summary="Sign in with a local account; sets the session cookie",
             openapi_extra=body_limit(4096))  # fmt: skip
async def sign_in(request: Request, response: Response, state: State, body: SignIn) -> SessionInfo:
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise Problem(415, "send the credentials as application/json")  # no cross-site form can
    client = client_address(request)
    key = f"account:{body.username}"
    state.sign_in_limiter.check(client, key)
    async with state.hashing:
        account = await asyncio.to_thread(state.accounts.verify, body.username, body.password)
    if account is None:
        state.sign_in_limiter.failed(client, key)
        raise Problem(401, "wrong account name or password")
    session = state.sessions.create(account.principal(), account.name)
    _set_session_cookie(response, state, session)
    return _info(state, session)


def _set_session_cookie(response: Response, state: ApiState, session: Session) -> None:
    response.set_cookie(
        SESSION_COOKIE, session.id, httponly=True, samesite="strict", secure=state.tls, path="/",
        max_age=int(state.sessions.lifetime),
    )  # fmt: skip


@router.get("/session", summary="The signed-in user, role, tenant and CSRF token")
async def current(state: State, session: Annotated[Session, Depends(_current)]) -> SessionInfo:
    return _info(state, session)


@router.delete("/session", summary="Sign out", status_code=204)
async def sign_out(state: State, session: Annotated[Session, Depends(_current)]) -> Response:
    state.sessions.end(session.id)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=state.tls)
    return response


class SignInMethods(BaseModel):
    local: bool = Field(description="Local accounts exist (POST /v1/session).")
    oidc: bool = Field(description="The issuer's sign-in is offered (GET /v1/session/oidc/start).")


@router.get("/session/methods", summary="How people sign in to this gateway (no session needed)")
async def methods(state: State) -> SignInMethods:
    local = bool(await asyncio.to_thread(state.accounts.accounts))
    return SignInMethods(local=local, oidc=state.oidc_sign_in is not None)


def _oidc(state: ApiState) -> OidcSignIn:
    if state.oidc_sign_in is None:
        raise Problem(404, "no OIDC sign-in: [api.oidc] names no client_id for the console")
    return state.oidc_sign_in


@router.get("/session/oidc/start", summary="Leave for the issuer's sign-in (authorization code + PKCE)",
            response_class=RedirectResponse, status_code=303)  # fmt: skip
async def oidc_start(request: Request, state: State) -> RedirectResponse:
    url, flow = await _oidc(state).start(str(request.url_for("oidc_callback")))
    response = RedirectResponse(url, 303)
    response.set_cookie(
        STATE_COOKIE,
        flow,
        max_age=600,
        httponly=True,
        samesite="lax",
        secure=state.tls,
        path="/v1/session/oidc",
    )  # Lax: the issuer's redirect back is a top-level navigation from another site
    return response


@router.get("/session/oidc/callback", summary="The issuer's redirect back: opens the session",
            response_class=RedirectResponse, status_code=303, name="oidc_callback")  # fmt: skip
async def oidc_callback(
    request: Request,
    state: State,
    code: Annotated[str | None, Query(max_length=2048)] = None,
    flow: Annotated[str | None, Query(alias="state", max_length=256)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> RedirectResponse:
    if error or not code or not flow:
        raise Problem(401, f"the issuer did not sign you in: {error or 'no code'}")
    who = await _oidc(state).finish(flow, code, request.cookies.get(STATE_COOKIE))
    session = state.sessions.create(who)
    response = RedirectResponse("/console/", 303)
    _set_session_cookie(response, state, session)
    response.delete_cookie(
        STATE_COOKIE, path="/v1/session/oidc", httponly=True, samesite="lax", secure=state.tls
    )
    return response
