"""Browser sessions of the console: a random id in a cookie, the caller kept on the server.

The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it) and Secure when
the API serves TLS. Each session has its own CSRF token, which the console sends in the `X-CSRF-Token`
header of every state-changing request: a page of another origin can neither read it nor set that header.
A session ends after `session_idle` seconds without a request, after `session_max` seconds in any case, at
sign-out, and for a local account as soon as the account is removed or its role or tenant changes (the
caller is taken from the account file on every request). The store is in memory: a restart signs everyone out.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field, replace

from edge.api.accounts import AccountStore
from edge.api.auth import Principal, unauthorized
from edge.api.problems import Problem

SESSION_COOKIE = "edge_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_SESSIONS = 10_000  # memory stays bounded; the oldest idle sessions go first


@dataclass(slots=True)
class Session:
    id: str
    principal: Principal
    csrf: str
    account: str | None  # local account name; None for an OIDC sign-in
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)


class SessionStore:
    def __init__(
        self, accounts: AccountStore | None, idle: float = 1800.0, lifetime: float = 43_200.0
    ) -> None:
        self.accounts = accounts
        self.idle = idle
        self.lifetime = lifetime
        self._sessions: dict[str, Session] = {}

    def create(self, principal: Principal, account: str | None = None) -> Session:
        if len(self._sessions) >= _MAX_SESSIONS:
            self._evict()
        wall_end = time.time() + self.lifetime
        if principal.valid_until is None or principal.valid_until > wall_end:
            principal = replace(principal, valid_until=wall_end)  # a live stream ends with its session
        session = Session(secrets.token_urlsafe(32), principal, secrets.token_urlsafe(32), account)
        self._sessions[session.id] = session
        return session

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def get(self, session_id: str | None) -> Session:
        """The live session of this id (its idle clock restarted); Problem 401 otherwise."""
        session = self._sessions.get(session_id or "")
        now = time.monotonic()
        if session is None:
            raise unauthorized("not signed in (or the session ended): sign in again")
        if now - session.seen > self.idle or now - session.created > self.lifetime:
            self.end(session.id)
            raise unauthorized("the session expired: sign in again")
        if session.account is not None:
            current = self.accounts.get(session.account) if self.accounts else None
            if (
                current is None
                or current.principal().tenant != session.principal.tenant
                or (current.role != session.principal.role)
            ):
                self.end(session.id)
                raise unauthorized("the account was removed or changed: sign in again")
        session.seen = now
        return session

    def check_csrf(self, session: Session, token: str | None) -> None:
        if not token or not hmac.compare_digest(token, session.csrf):
            raise Problem(
                403, f"missing or wrong {CSRF_HEADER} header (the console sends it with each change)"
            )

    def _evict(self) -> None:
        oldest = sorted(self._sessions.values(), key=lambda s: s.seen)[: _MAX_SESSIONS // 10]
        for session in oldest:
            self.end(session.id)
