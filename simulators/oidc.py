"""A test OpenID Connect issuer: discovery, a rotating JWKS and a client-credentials token endpoint.

An independent identity provider for the gateway's API tests and the demo (it imports nothing from `edge`):
it signs RS256 access tokens whose claims carry the tenant and role the API maps to a caller.

    GET  /.well-known/openid-configuration   issuer, jwks_uri, token_endpoint
    GET  /jwks                               public keys (the current signing key and, after a rotation, the
                                             previous one until it is dropped)
    POST /token                              grant_type=client_credentials (HTTP Basic or form); client
                                             `<tenant>-<role>` with secret `<client>-secret`, or `admin`
                                             (every tenant, role admin); optional `audience`;
                                             grant_type=authorization_code for a public client: the code from
                                             /authorize, the same redirect_uri and the PKCE code_verifier (S256)
    GET  /authorize                          the sign-in page of an authorization request (response_type=code,
                                             S256 code_challenge required): pick an identity (tenant and role)
    POST /authorize                          the page's answer: redirects to redirect_uri with code and state
    POST /_sim/rotate                        {"drop_old": bool}: a new signing key; old tokens fail once dropped
    POST /_sim/token                         mint any claims for tests: {"tenant", "role", "ttl", "nbf_in",
                                             "aud", "iss", "sub", "kid", "extra"}
    POST /_sim/outage                        {"down": bool}: discovery and JWKS answer 503 while down
    GET  /_sim/stats                         discovery/JWKS fetches and tokens issued

    python -m simulators.oidc --port 9400 --tenants acme,globex
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import html
import secrets
import socket
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

ROLES = ("viewer", "operator", "admin")
DEFAULT_AUDIENCE = "edge-gateway"


@dataclass(frozen=True)
class Client:
    client_id: str
    secret: str
    tenant: str | None
    role: str


@dataclass
class Stats:
    discovery: int = 0
    jwks: int = 0
    tokens: int = 0


@dataclass
class OidcIssuer:
    issuer: str
    tenants: tuple[str, ...]
    audience: str = DEFAULT_AUDIENCE
    token_ttl: float = 300.0
    keys: list[RSAKey] = field(default_factory=list)
    down: bool = False
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys.append(_new_key())
        self.clients = {"admin": Client("admin", "admin-secret", None, "admin")}
        self.codes: dict[str, _Grant] = {}  # authorization codes, used once
        for tenant in self.tenants:
            for role in ROLES:
                client_id = f"{tenant}-{role}"
                self.clients[client_id] = Client(client_id, f"{client_id}-secret", tenant, role)

    @property
    def signing_key(self) -> RSAKey:
        return self.keys[-1]

    def rotate(self, drop_old: bool = False) -> str:
        """A new signing key; the old ones stay published (tokens they signed stay valid) unless dropped."""
        self.keys = ([] if drop_old else self.keys[-1:]) + [_new_key()]
        return str(self.signing_key.kid)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) | {"use": "sig", "alg": "RS256"} for k in self.keys]}

    def mint(
        self,
        *,
        tenant: str | None,
        role: str,
        subject: str = "test",
        ttl: float | None = None,
        nbf_in: float = 0.0,
        aud: str | list[str] | None = None,
        iss: str | None = None,
        kid: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": iss or self.issuer,
            "sub": subject,
            "aud": aud or self.audience,
            "iat": now,
            "nbf": now + int(nbf_in),
            "exp": now + int(self.token_ttl if ttl is None else ttl),
            "jti": uuid.uuid4().hex,
            "roles": [role],
            **({"tenant": tenant} if tenant else {}),
            **(extra or {}),
        }
        key = self.signing_key
        header = {"alg": "RS256", "typ": "at+jwt", "kid": kid or key.kid}
        self.stats.tokens += 1
        return jwt.encode(header, claims, key)

    # ---- HTTP ------------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/token", self._token, methods=["POST"]),
                Route("/authorize", self._authorize, methods=["GET", "POST"]),
                Route("/_sim/rotate", self._rotate, methods=["POST"]),
                Route("/_sim/token", self._sim_token, methods=["POST"]),
                Route("/_sim/outage", self._outage, methods=["POST"]),
                Route("/_sim/stats", self._stats),
            ]
        )

    async def _discovery(self, request: Request) -> JSONResponse:
        if self.down:
            return JSONResponse({"error": "temporarily_unavailable"}, 503)
        self.stats.discovery += 1
        return JSONResponse(
            {
                "issuer": self.issuer,
                "jwks_uri": f"{self.issuer}/jwks",
                "token_endpoint": f"{self.issuer}/token",
                "authorization_endpoint": f"{self.issuer}/authorize",
                "grant_types_supported": ["client_credentials", "authorization_code"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                    "none",
                ],
                "code_challenge_methods_supported": ["S256"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["token", "code"],
                "subject_types_supported": ["public"],
            }
        )

    async def _jwks(self, request: Request) -> JSONResponse:
        if self.down:
            return JSONResponse({"error": "temporarily_unavailable"}, 503)
        self.stats.jwks += 1
        return JSONResponse(self.jwks())

    async def _token(self, request: Request) -> JSONResponse:
        form = {
            k: v[0] for k, v in urllib.parse.parse_qs((await request.body()).decode(errors="replace")).items()
        }
        client_id, secret = _basic(request.headers.get("authorization"))
        client_id = client_id or str(form.get("client_id") or "")
        secret = secret or str(form.get("client_secret") or "")
        if form.get("grant_type") == "authorization_code":
            return self._exchange_code(form)
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        client = self.clients.get(client_id)
        if client is None or not secrets.compare_digest(client.secret, secret):
            return JSONResponse({"error": "invalid_client"}, 401, headers={"WWW-Authenticate": "Basic"})
        audience = str(form.get("audience") or self.audience)
        token = self.mint(tenant=client.tenant, role=client.role, subject=client.client_id, aud=audience)
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_in": int(self.token_ttl)}
        )

    async def _authorize(self, request: Request) -> Response:
        if request.method == "GET":
            query = dict(request.query_params)
            problem = _authorization_problem(query)
            if problem:
                return JSONResponse({"error": "invalid_request", "error_description": problem}, 400)
            return HTMLResponse(self._sign_in_page(query))
        form = {
            k: v[0] for k, v in urllib.parse.parse_qs((await request.body()).decode(errors="replace")).items()
        }
        if any(not form.get(k) for k in ("client_id", "redirect_uri", "code_challenge")):
            return JSONResponse({"error": "invalid_request"}, 400)
        tenant, _, role = form.get("identity", "").partition(":")
        if role not in ROLES or (tenant and tenant not in self.tenants):
            return JSONResponse({"error": "access_denied"}, 400)
        code = secrets.token_urlsafe(24)
        self.codes[code] = _Grant(
            form["client_id"], form["redirect_uri"], form["code_challenge"], tenant or None, role,
            form.get("subject") or f"user-{tenant or 'all'}-{role}", time.monotonic() + _CODE_TTL,
        )  # fmt: skip
        answer = urllib.parse.urlencode({"code": code, "state": form.get("state", "")})
        return RedirectResponse(f"{form['redirect_uri']}?{answer}", 303)

    def _sign_in_page(self, query: dict[str, str]) -> str:
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(query.get(k, ""))}">'
            for k in ("client_id", "redirect_uri", "code_challenge", "state")
        )
        options = (
            "".join(
                f'<option value="{t}:{r}">{t} {r}</option>'
                for t in self.tenants
                for r in ROLES
                if r != "admin"
            )
            + '<option value=":admin">admin (every tenant)</option>'
        )
        return (
            "<!doctype html><title>Test issuer sign-in</title><h1>Test issuer</h1>"
            f'<form method="post" action="{html.escape(self.issuer)}/authorize">{hidden}'
            f'<label>Identity <select name="identity" id="identity">{options}</select></label>'
            '<label>Name <input name="subject" id="subject"></label>'
            '<button type="submit" id="approve">Sign in</button></form>'
        )

    def _exchange_code(self, form: dict[str, str]) -> JSONResponse:
        grant = self.codes.pop(str(form.get("code")), None)
        verifier = str(form.get("code_verifier") or "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if (
            grant is None
            or grant.expires < time.monotonic()
            or grant.client_id != form.get("client_id")
            or grant.redirect_uri != form.get("redirect_uri")
            or not secrets.compare_digest(grant.code_challenge, challenge)
        ):
            return JSONResponse({"error": "invalid_grant"}, 400)
        token = self.mint(tenant=grant.tenant, role=grant.role, subject=grant.subject)
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_in": int(self.token_ttl)}
        )

    async def _rotate(self, request: Request) -> JSONResponse:
        body = await _json(request)
        return JSONResponse({"kid": self.rotate(bool(body.get("drop_old", False)))})

    async def _sim_token(self, request: Request) -> JSONResponse:
        body = await _json(request)
        allowed = {"tenant", "role", "subject", "ttl", "nbf_in", "aud", "iss", "kid", "extra"}
        args = {k: v for k, v in body.items() if k in allowed}
        return JSONResponse({"access_token": self.mint(**{"tenant": None, "role": "viewer", **args})})

    async def _outage(self, request: Request) -> JSONResponse:
        self.down = bool((await _json(request)).get("down", True))
        return JSONResponse({"down": self.down})

    async def _stats(self, request: Request) -> JSONResponse:
        s = self.stats
        return JSONResponse(
            {"discovery": s.discovery, "jwks": s.jwks, "tokens": s.tokens, "keys": len(self.keys)}
        )


_CODE_TTL = 60.0  # seconds an authorization code stays valid


@dataclass(frozen=True)
class _Grant:
    client_id: str
    redirect_uri: str
    code_challenge: str
    tenant: str | None
    role: str
    subject: str
    expires: float


def _authorization_problem(query: dict[str, str]) -> str | None:
    if query.get("response_type") != "code":
        return "response_type must be code"
    if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
        return "PKCE with code_challenge_method=S256 is required"
    if not query.get("client_id") or not query.get("redirect_uri", "").startswith(("http://", "https://")):
        return "client_id and an http(s) redirect_uri are required"
    return None


def _new_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": uuid.uuid4().hex[:12]}, private=True)


def _basic(header: str | None) -> tuple[str, str]:
    if not header or not header.lower().startswith("basic "):
        return "", ""
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return "", ""
    return user, password


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@contextlib.asynccontextmanager
async def running(
    port: int = 0, tenants: tuple[str, ...] = ("acme", "globex"), **options: Any
) -> AsyncIterator[OidcIssuer]:
    """Serve an issuer on 127.0.0.1:port (0: a free one) for the duration of the block."""
    sock = socket.socket(
        socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )  # so asyncio sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    issuer = OidcIssuer(f"http://127.0.0.1:{sock.getsockname()[1]}", tenants, **options)
    server = _Server(uvicorn.Config(issuer.app(), log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield issuer  # the socket already listens: early connections wait in its backlog
    finally:
        server.should_exit = True
        await asyncio.wait({task}, timeout=5)
        sock.close()


async def main(port: int, tenants: tuple[str, ...], audience: str, token_ttl: float) -> None:
    async with running(port, tenants, audience=audience, token_ttl=token_ttl) as issuer:
        print(f"OIDC issuer {issuer.issuer} (audience {audience!r}); clients and secrets:", flush=True)
        for client in issuer.clients.values():
            print(f"  {client.client_id:<20} {client.secret}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=9400)
    parser.add_argument("--tenants", default="acme,globex")
    parser.add_argument("--audience", default=DEFAULT_AUDIENCE)
    parser.add_argument("--token-ttl", type=float, default=300.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            main(args.port, tuple(t for t in args.tenants.split(",") if t), args.audience, args.token_ttl)
        )
