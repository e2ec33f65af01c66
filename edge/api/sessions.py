"""Browser sessions of the console: a random id in a cookie, the caller kept on the server.

The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it) and Secure when
the API serves TLS. Each session has its own CSRF token, which the console sends in the `X-CSRF-Token`
header of every state-changing request: a page of another origin can neither read it nor set that header.
A session ends after `session_idle` seconds without a request, after `session_max` seconds in any case, at
sign-out, and for a local account as soon as the account is removed or its role or tenant changes (the
caller is taken from the account file on every request).

Sessions survive a restart of the gateway: they are kept in `{data_dir}/sessions.db` (SQLite, 0600) under the
SHA-256 of their id, so the file names no cookie that would sign anyone in; the CSRF token is an HMAC of the
id, stored nowhere. Expired sessions are deleted when the store opens and at each sign-in. Times are wall
clock (a monotonic clock starts again with the process); the last request's time is written at most every
`_SEEN_WRITES` seconds, so after a restart a session may have up to that much less idle time left.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from edge.api.accounts import AccountStore
from edge.api.auth import ROLE_RANK, Principal, unauthorized
from edge.api.problems import Problem
from edge.ops.files import private_database

SESSION_COOKIE = "edge_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSIONS_FILE = "sessions.db"
_MAX_SESSIONS = 10_000  # the file stays bounded; the oldest idle sessions go first
_SEEN_WRITES = 15.0  # seconds between writes of one session's last request time

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY,           -- SHA-256 of the session id (hex); the id itself is only in the cookie
    tenant TEXT, role TEXT NOT NULL, subject TEXT NOT NULL, valid_until REAL,
    account TEXT,                   -- local account name; NULL for an OIDC sign-in
    created REAL NOT NULL, seen REAL NOT NULL
);
"""


@dataclass(slots=True)
class Session:
    id: str
    principal: Principal
    csrf: str
    account: str | None  # local account name; None for an OIDC sign-in
    created: float = field(default_factory=time.time)
    seen: float = field(default_factory=time.time)
    stored_seen: float = 0.0  # the `seen` last written to the file


def sessions_path(data_dir: Path) -> Path:
    return data_dir / SESSIONS_FILE


class SessionStore:
    def __init__(
        self, path: Path, accounts: AccountStore | None, idle: float = 1800.0, lifetime: float = 43_200.0
    ) -> None:
        self.accounts = accounts
        self.idle = idle
        self.lifetime = lifetime
        self._db = sqlite3.connect(private_database(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a session lost to a power cut means signing in again
        self._db.executescript(_SCHEMA)
        self._sessions: dict[str, Session] = {}  # by key: the sessions used since this process started
        self.prune()

    def close(self) -> None:
        self._db.close()

    def create(self, principal: Principal, account: str | None = None) -> Session:
        self.prune()
        (count,) = self._db.execute("SELECT count(*) FROM sessions").fetchone()
        if count >= _MAX_SESSIONS:
            self._evict(count - _MAX_SESSIONS + _MAX_SESSIONS // 10)
        wall_end = time.time() + self.lifetime
        if principal.valid_until is None or principal.valid_until > wall_end:
            principal = replace(principal, valid_until=wall_end)  # a live stream ends with its session
        session_id = secrets.token_urlsafe(32)
        session = Session(session_id, principal, _csrf(session_id), account)
        session.stored_seen = session.seen
        self._db.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (_key(session_id), principal.tenant, principal.role, principal.subject, principal.valid_until,
             account, session.created, session.seen),
        )  # fmt: skip
        self._sessions[_key(session_id)] = session
        return session

    def end(self, session_id: str) -> None:
        key = _key(session_id)
        self._sessions.pop(key, None)
        self._db.execute("DELETE FROM sessions WHERE key = ?", (key,))

    def get(self, session_id: str | None) -> Session:
        """The live session of this id (its idle clock restarted); Problem 401 otherwise."""
        session = self._find(session_id or "")
        now = time.time()
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
        if now - session.stored_seen >= _SEEN_WRITES:
            self._db.execute("UPDATE sessions SET seen = ? WHERE key = ?", (now, _key(session.id)))
            session.stored_seen = now
        return session

    def check_csrf(self, session: Session, token: str | None) -> None:
        if not token or not hmac.compare_digest(token, session.csrf):
            raise Problem(
                403, f"missing or wrong {CSRF_HEADER} header (the console sends it with each change)"
            )

    def prune(self) -> int:
        """Delete the sessions past their idle time or lifetime; returns how many."""
        now = time.time()
        gone = self._db.execute(
            "DELETE FROM sessions WHERE seen < ? OR created < ?", (now - self.idle, now - self.lifetime)
        ).rowcount
        if gone:
            self._sessions = {
                k: s
                for k, s in self._sessions.items()
                if now - s.seen <= self.idle and now - s.created <= self.lifetime
            }
        return int(gone)

    def _find(self, session_id: str) -> Session | None:
        if not session_id:
            return None
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is not None:
            return session
        row = self._db.execute(
            "SELECT tenant, role, subject, valid_until, account, created, seen FROM sessions WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None or row[1] not in ROLE_RANK:
            return None
        tenant, role, subject, valid_until, account, created, seen = row
        principal = Principal(tenant, role, subject, valid_until)
        session = Session(session_id, principal, _csrf(session_id), account, created, seen, seen)
        self._sessions[key] = session  # a session from before the restart
        return session

    def _evict(self, count: int) -> None:
        keys = [k for (k,) in self._db.execute("SELECT key FROM sessions ORDER BY seen LIMIT ?", (count,))]
        self._db.executemany("DELETE FROM sessions WHERE key = ?", [(k,) for k in keys])
        for key in keys:
            self._sessions.pop(key, None)


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _csrf(session_id: str) -> str:
    """The session's CSRF token: derived from its id (which no script can read), so it is stored nowhere."""
    digest = hmac.new(session_id.encode(), b"edge-console-csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
