"""Verification of what a tenant's platform sends down: a compact JWS (ES256) signed with the tenant's key.

Every message (command, deployment, entitlement answer) is a JWT whose claims carry `jti` (its id), `exp`
(not after), `tenant`, `aud` (this gateway's id) and `kind`. `Verifier.verify` returns the claims or raises
`Refused` with a reason a person can act on; replays are the ledger's business (edge.downlink.ledger), since
only it remembers ids across restarts. joserfc does the cryptography (the API's JWT library, maintained).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey

__all__ = ["ALGORITHM", "KINDS", "Refused", "Verifier", "load_public_key", "unverified", "utc"]

ALGORITHM = "ES256"  # pinned: never "none", never an HMAC a gateway could forge with
KINDS = ("point.write", "module.command", "deployment", "entitlements")
MAX_MESSAGE = 256 * 1024  # bytes of one JWS: a whole configuration file fits


class Refused(Exception):
    """A message the gateway will not act on; `reason` says why (it is reported upstream)."""

    def __init__(self, reason: str, claims: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claims = claims or {}


def load_public_key(path: Path) -> ECKey:
    """The platform's public key (PEM, P-256). Raises ValueError naming the file."""
    try:
        key = ECKey.import_key(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except (JoseError, ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a P-256 public key in PEM: {exc}") from None
    if key.is_private:
        raise ValueError(f"{path} holds a private key: the gateway needs only the platform's public key")
    return key


class Verifier:
    """Checks one tenant's messages: signature with its key, then tenant, audience, expiry and shape."""

    def __init__(self, tenant: str, gateway_id: str, key: ECKey, *, leeway: float = 30.0) -> None:
        self.tenant = tenant
        self._gateway = gateway_id
        self._key = key
        self._leeway = leeway

    def verify(self, token: str, *, now: float | None = None) -> dict[str, Any]:
        if not isinstance(token, str) or len(token) > MAX_MESSAGE or token.count(".") != 2:
            raise Refused(f"not a compact JWS of at most {MAX_MESSAGE} bytes")
        try:
            claims = dict(jwt.decode(token, self._key, algorithms=[ALGORITHM]).claims)
        except BadSignatureError:
            raise Refused(
                f"signature does not verify with tenant {self.tenant}'s key (tampered, or signed by another key)",
                unverified(token),
            ) from None
        except JoseError as exc:
            raise Refused(f"unreadable JWS: {exc}") from None
        return self.check_claims(claims, now=time.time() if now is None else now)

    def check_claims(self, claims: dict[str, Any], *, now: float) -> dict[str, Any]:
        def refuse(reason: str) -> Refused:
            return Refused(reason, claims)

        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= 128:
            raise refuse("no 'jti' (a string of 1..128 characters): every message needs an id")
        if claims.get("tenant") != self.tenant:
            raise refuse(f"for tenant {claims.get('tenant')!r}, received on tenant {self.tenant}'s downlink")
        if claims.get("aud") != self._gateway:
            raise refuse(f"for gateway {claims.get('aud')!r}, this is {self._gateway}")
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise refuse("no 'exp' (not-after time, Unix seconds)")
        if now > exp + self._leeway:
            raise refuse(f"expired: not after {utc(exp)}, now {utc(now)}")
        if claims.get("kind") not in KINDS:
            raise refuse(f"unknown kind {claims.get('kind')!r} (expected one of {', '.join(KINDS)})")
        return claims


def unverified(token: str) -> dict[str, Any]:
    """The claimed `jti` and `kind` of a message that failed verification, only to name it in the refusal
    (never acted on)."""
    try:
        payload = json.loads(jws.extract_compact(token.encode()).payload)
    except (JoseError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(payload, dict):
        return {}
    return {k: str(payload[k])[:128] for k in ("jti", "kind") if k in payload}


def utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
