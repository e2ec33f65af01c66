"""Console sign-in at the OIDC issuer: the authorization code flow with PKCE (RFC 7636, S256), by Authlib.

`start` makes a fresh `state` and code verifier, remembers them for ten minutes and returns the issuer's
authorization URL; the browser also gets the state in a short-lived cookie, so a callback is accepted only in
the browser that started it (no one can sign a victim in to the attacker's account). `finish` takes the code
back once, exchanges it with the verifier at the token endpoint (a public client: no secret on the gateway),
and checks the access token exactly as a bearer token (edge.api.auth.OidcVerifier): the same issuer,
audience, algorithms and claim mapping give the session's caller.
"""

from __future__ import annotations

import secrets
import time
import warnings
from dataclasses import dataclass

import authlib.deprecate  # noqa: F401  (installs Authlib's own filter first, so the one below takes precedence)
from authlib.common.security import generate_token

from edge.api.auth import OidcVerifier, Principal, unauthorized
from edge.api.problems import Problem

with warnings.catch_warnings():  # Authlib 1.9 warns that plain httpx is deprecated (see cloud_sync/_oauth.py)
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client

STATE_COOKIE = "edge_oidc_state"
_PENDING_FOR = 600.0  # seconds between leaving for the issuer and coming back
_MAX_PENDING = 1000


@dataclass(frozen=True, slots=True)
class _Pending:
    verifier: str
    redirect_uri: str
    started: float


class OidcSignIn:
    def __init__(self, verifier: OidcVerifier, client_id: str, scope: str) -> None:
        self.verifier = verifier
        self.client_id = client_id
        self.scope = scope
        self._pending: dict[str, _Pending] = {}

    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            scope=self.scope,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="none",
            timeout=self.verifier.config.http_timeout,
        )

    async def start(self, redirect_uri: str) -> tuple[str, str]:
        """(the issuer's authorization URL, the state to keep in the browser's cookie)."""
        endpoint = await self._endpoint("authorization_endpoint")
        self._forget_old()
        code_verifier = generate_token(64)
        async with self._client(redirect_uri) as client:
            url, state = client.create_authorization_url(
                endpoint, state=secrets.token_urlsafe(24), code_verifier=code_verifier
            )
        self._pending[state] = _Pending(code_verifier, redirect_uri, time.monotonic())
        return url, state

    async def finish(self, state: str, code: str, cookie_state: str | None) -> Principal:
        pending = self._pending.pop(state, None)
        if pending is None or time.monotonic() - pending.started > _PENDING_FOR:
            raise unauthorized("this sign-in is unknown or took too long: start again")
        if cookie_state is None or not secrets.compare_digest(cookie_state, state):
            raise unauthorized("this sign-in was started in another browser: start again")
        endpoint = await self._endpoint("token_endpoint")
        try:
            async with self._client(pending.redirect_uri) as client:
                token = await client.fetch_token(endpoint, code=code, code_verifier=pending.verifier)
        except (OAuthError, OSError, ValueError) as exc:
            raise Problem(502, f"the issuer refused the sign-in: {exc}") from None
        access = token.get("access_token")
        if not isinstance(access, str):
            raise Problem(502, "the issuer's answer has no access token")
        return self.verifier.principal(await self.verifier.verify(access))

    async def _endpoint(self, name: str) -> str:
        url = (await self.verifier.metadata()).get(name)
        if not isinstance(url, str):
            raise Problem(503, f"the issuer {self.verifier.config.issuer} names no {name}")
        if not url.startswith("https://") and not self.verifier.config.allow_http:
            raise Problem(503, f"the issuer's {name} {url!r} is not https")
        return url

    def _forget_old(self) -> None:
        now = time.monotonic()
        self._pending = {s: p for s, p in self._pending.items() if now - p.started <= _PENDING_FOR}
        while len(self._pending) >= _MAX_PENDING:
            del self._pending[next(iter(self._pending))]
