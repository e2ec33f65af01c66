"""Console sign-in with a local account: `POST /v1/session` opens a session (cookie), `GET` shows it with its
CSRF token, `DELETE` signs out (edge.api.sessions).

Failed sign-ins count per (client address, account name) in the API's failure limiter: after
`[api] sign_in_failures` within `sign_in_lockout` seconds that account is refused from that address (429)
without a password check, while other accounts behind the same proxy and the same account from elsewhere
still sign in. Local accounts work beside an OIDC issuer too (bearer tokens for programs, accounts for the
console); a gateway that should know only its issuer's users simply has no local accounts.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from edge.api.auth import Principal
from edge.api.deps import ApiState, State, client_address, session_of
from edge.api.limits import body_limit
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


def _current(request: Request, state: State) -> Session:
    return session_of(state, request)


@router.post("/session", summary="Sign in with a local account; sets the session cookie",
             openapi_extra=body_limit(4096))  # fmt: skip
async def sign_in(request: Request, response: Response, state: State, body: SignIn) -> SessionInfo:
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise Problem(415, "send the credentials as application/json")  # no cross-site form can
    client = client_address(request)
    key = f"account:{body.username}"
    state.sign_in_limiter.check(client, key)
    account = await asyncio.to_thread(state.accounts.verify, body.username, body.password)
    if account is None:
        state.sign_in_limiter.failed(client, key)
        raise Problem(401, "wrong account name or password")
    session = state.sessions.create(account.principal(), account.name)
    response.set_cookie(
        SESSION_COOKIE, session.id, httponly=True, samesite="strict", secure=state.tls, path="/",
        max_age=int(state.sessions.lifetime),
    )  # fmt: skip
    return _info(state, session)


@router.get("/session", summary="The signed-in user, role, tenant and CSRF token")
async def current(state: State, session: Annotated[Session, Depends(_current)]) -> SessionInfo:
    return _info(state, session)


@router.delete("/session", summary="Sign out", status_code=204)
async def sign_out(state: State, session: Annotated[Session, Depends(_current)]) -> Response:
    state.sessions.end(session.id)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=state.tls)
    return response
