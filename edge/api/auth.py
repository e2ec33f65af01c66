"""Who is calling: OAuth2 bearer JWTs from an OpenID Connect issuer, mapped to a tenant and a role.

`OidcVerifier` discovers the issuer's JWKS from `/.well-known/openid-configuration`, caches the keys for
`jwks_cache` seconds, refetches them when a token names an unknown `kid` (at most every `jwks_refresh_min`
seconds, so junk tokens cannot make us hammer the issuer) and fails closed: once the cache has expired and
the issuer cannot be reached, no token is accepted (503). Algorithms are pinned by configuration and checked
against the token header before any key is touched, so `alg: none` and HMAC tokens signed with a public key
never get near a verifier. Keys come only from the issuer's JWKS: `jku`, `x5u` and `jwk` headers are refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from edge.api.problems import Problem
from edge.config.models import OidcConfig

log = logging.getLogger(__name__)

Role = Literal["viewer", "operator", "admin"]
ROLE_RANK: dict[str, int] = {"viewer": 1, "operator": 2, "admin": 3}
_FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c")
_VERIFIED_TOKENS = 1024  # signatures remembered (a few hundred KiB of tokens at most)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: its tenant (None for an admin token that names none), role and token subject."""

    tenant: str | None
    role: Role
    subject: str
    valid_until: float | None = None  # wall time the token stops being accepted (exp + leeway)

    def has(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def unauthorized(reason: str) -> Problem:
    header = f'Bearer error="invalid_token", error_description="{reason.replace(chr(34), chr(39))}"'
    return Problem(401, reason, headers={"WWW-Authenticate": header})


class FailureLimiter:
    """Refuses (429) a credential that failed authentication `limit` times within `window` seconds from one
    client address.

    Failures count per (client, credential): a client replaying a refused token (or sending none) is refused
    before any signature work, while a valid token is never refused because of other tokens' failures, from
    the same address (every client behind a reverse proxy, or one user's stale tab) or another. Good requests
    never count. Refusing a new bad token is cheap anyway: malformed tokens, other algorithms and unknown key
    ids fail before any key is used, and key refetches are rate-limited (`jwks_refresh_min`)."""

    def __init__(self, limit: int = 20, window: float = 1.0, max_entries: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self._max_entries = max_entries
        self._failures: dict[tuple[str, str], list[float]] = {}

    def check(self, client: str, credential: str | None) -> None:
        count = self._count((client, _fingerprint(credential)), time.monotonic())
        if count >= self.limit:
            raise Problem(
                429,
                f"too many failed authentications of this credential from {client} "
                f"({count} in {self.window:g} s)",
                headers={"Retry-After": str(max(1, round(self.window)))},
            )

    def failed(self, client: str, credential: str | None) -> None:
        now = time.monotonic()
        key = (client, _fingerprint(credential))
        if key not in self._failures and len(self._failures) >= self._max_entries:
            self._failures = {
                k: kept for k, times in self._failures.items() if (kept := self._within(times, now))
            }
            if len(self._failures) >= self._max_entries:
                return  # that many distinct failures within the window: memory stays bounded first
        self._failures.setdefault(key, []).append(now)

    def _count(self, key: tuple[str, str], now: float) -> int:
        times = self._failures.get(key)
        if not times:
            return 0
        recent = self._within(times, now)
        if recent:
            self._failures[key] = recent
        else:
            del self._failures[key]
        return len(recent)

    def _within(self, times: list[float], now: float) -> list[float]:
        return [t for t in times if now - t < self.window]


def _fingerprint(credential: str | None) -> str:
    """The key a credential is counted under: a digest, so the limiter holds no token."""
    return hashlib.sha256(credential.encode("utf-8", "surrogatepass")).hexdigest()[:32] if credential else "-"


class OidcVerifier:
    def __init__(self, config: OidcConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._client = client or httpx.AsyncClient(timeout=config.http_timeout, follow_redirects=False)
        self._keys: KeySet | None = None
        self._fetched = 0.0  # monotonic time of the last successful fetch
        self._tried = -1e9  # monotonic time of the last refresh attempt (rate limit)
        self._lock = asyncio.Lock()
        self.fetches = 0
        self.limiter = FailureLimiter()
        self._meta: dict[str, Any] | None = None  # the discovery document, fetched with the keys
        # token -> (the key set that checked its signature, its claims), least recently used first
        self._verified: OrderedDict[str, tuple[KeySet, dict[str, Any]]] = OrderedDict()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def metadata(self) -> dict[str, Any]:
        """The issuer's discovery document (authorization and token endpoints), fetched with its keys."""
        if self._meta is None:
            await self._refresh(force=True)
        assert self._meta is not None
        return self._meta

    async def authenticate(self, token: str | None, client: str = "-") -> Principal:
        """The caller of a request from `client` (its address); raises Problem 401/403/429/503."""
        self.limiter.check(client, token)
        try:
            if not token:
                raise unauthorized("no bearer token: send 'Authorization: Bearer <access token>'")
            return self.principal(await self.verify(token))
        except Problem as exc:
            if exc.status in (401, 403):
                self.limiter.failed(client, token)
            raise

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims once signature, algorithm, issuer, audience and times check out; else Problem."""
        claims = self._signed_claims(token)
        if claims is None:
            claims = await self._check_signature(token)
        leeway = int(self.config.leeway)
        registry = JWTClaimsRegistry(
            leeway=leeway,
            iss={"essential": True, "value": self.config.issuer},
            aud={"essential": True, "value": self.config.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)  # every time: a token checked a minute ago may have expired since
        except JoseError as exc:
            raise unauthorized(f"token refused: {exc.description or exc.error}") from None
        return dict(claims)

    def _signed_claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a token whose signature was checked with the keys held now (None: check it).

        A client sends the same bearer token with every request until it expires; checking its signature
        again (~0.2 ms of the loop's time, for a refused request too) proves nothing new while the keys are
        the same. Tied to the key set it was checked with: a refreshed JWKS (a key rotated out) or an
        expired key cache checks every token again, fail-closed as before."""
        known = self._verified.get(token)
        if known is None:
            return None
        keys, claims = known
        if keys is not self._keys or time.monotonic() - self._fetched > self.config.jwks_cache:
            del self._verified[token]
            return None
        self._verified.move_to_end(token)
        return claims

    async def _check_signature(self, token: str) -> dict[str, Any]:
        try:
            header = jws.extract_compact(token.encode()).headers()
        except (JoseError, ValueError, UnicodeError) as exc:
            raise unauthorized(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if alg not in self.config.algorithms:
            raise unauthorized(
                f"algorithm {alg!r} is not accepted (accepted: {', '.join(self.config.algorithms)})"
            )
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                raise unauthorized(f"token header {name!r} refused: keys come only from the issuer's JWKS")
        keys = await self._keys_for(header.get("kid"))
        try:
            decoded = jwt.decode(token, keys, algorithms=list(self.config.algorithms))
        except JoseError as exc:
            raise unauthorized(f"signature not valid: {exc.description or exc.error}") from None
        claims = dict(decoded.claims)
        self._verified[token] = (keys, claims)
        if len(self._verified) > _VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return claims

    def principal(self, claims: dict[str, Any]) -> Principal:
        tenant = _claim(claims, self.config.tenant_claim)
        if tenant is not None and not isinstance(tenant, str):
            raise Problem(403, f"claim {self.config.tenant_claim!r} must be a string")
        role = self._role(_claim(claims, self.config.role_claim))
        if role is None:
            raise Problem(
                403,
                f"token carries no gateway role (viewer, operator or admin) in {self.config.role_claim!r}",
            )
        if tenant is None and role != "admin":
            raise Problem(403, f"token names no tenant in claim {self.config.tenant_claim!r}")
        exp = claims.get("exp")
        until = float(exp) + self.config.leeway if isinstance(exp, int | float) else None
        return Principal(tenant, role, str(claims.get("sub", "")), until)

    def _role(self, value: Any) -> Role | None:
        """The highest gateway role the claim holds. With a `role_map`, only its names count: an IdP role that
        happens to be called "admin" is not the gateway's admin unless the map says so."""
        names = value if isinstance(value, list) else [value] if isinstance(value, str) else []
        mapping = self.config.role_map
        best: Role | None = None
        for name in names:
            role = mapping.get(str(name)) if mapping else str(name)
            if role in ROLE_RANK and (best is None or ROLE_RANK[role] > ROLE_RANK[best]):
                best = role  # type: ignore[assignment]
        return best

    # ---- keys ------------------------------------------------------------------------------------------

    async def _keys_for(self, kid: Any) -> KeySet:
        now = time.monotonic()
        keys = self._keys
        if keys is None or now - self._fetched > self.config.jwks_cache:
            keys = await self._refresh(force=True)
        elif (
            kid is not None and not _has_kid(keys, kid) and now - self._tried >= self.config.jwks_refresh_min
        ):
            keys = await self._refresh(force=False) or keys  # rotation: the issuer may have a new key
        if kid is None and len(keys.keys) != 1:
            raise unauthorized("token names no key id (kid) and the issuer has several keys")
        if kid is not None and not _has_kid(keys, kid):
            raise unauthorized(f"unknown key id {kid!r}: not in the issuer's JWKS")
        return keys

    async def _refresh(self, *, force: bool) -> KeySet:
        seen = self._fetched
        async with self._lock:
            if self._keys is not None and self._fetched != seen:
                return self._keys  # another request refreshed them while this one waited
            self._tried = time.monotonic()
            try:
                keys = await self._fetch()
            except (httpx.HTTPError, ValueError, KeyError, TypeError, JoseError) as exc:
                log.warning("cannot fetch the keys of issuer %s: %s", self.config.issuer, exc)
                if force or self._keys is None:
                    self._keys = None  # fail closed: expired keys are not trusted any longer
                    raise Problem(
                        503,
                        f"the token issuer {self.config.issuer} cannot be reached to verify tokens: {exc}",
                    ) from None
                return self._keys
            self._keys, self._fetched = keys, time.monotonic()
            self.fetches += 1
            return keys

    async def _fetch(self) -> KeySet:
        discovery_url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        response = await self._client.get(discovery_url)
        response.raise_for_status()
        meta = response.json()
        self._meta = meta if meta.get("issuer") == self.config.issuer else None
        if meta.get("issuer") != self.config.issuer:
            raise ValueError(
                f"discovery document names issuer {meta.get('issuer')!r}, not {self.config.issuer!r}"
            )
        jwks_uri = str(meta["jwks_uri"])
        if not jwks_uri.startswith("https://") and not self.config.allow_http:
            raise ValueError(f"jwks_uri {jwks_uri!r} is not https")
        response = await self._client.get(jwks_uri)
        response.raise_for_status()
        public = [k for k in response.json()["keys"] if "d" not in k]  # never take private material
        return KeySet.import_key_set({"keys": public})


def _has_kid(keys: KeySet, kid: Any) -> bool:
    return any(k.kid == kid for k in keys.keys)


def _claim(claims: dict[str, Any], path: str) -> Any:
    """A claim by name, else by dotted path: 'realm_access.roles' reaches Keycloak's nested roles, while
    Auth0's namespaced 'https://edge.example.com/tenant' (dots in the name) is found as it is."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
