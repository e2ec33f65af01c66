"""Verification of what a tenant's platform sends down: a compact JWS (ES256) signed with the tenant's key.

Every message (command, deployment, entitlement answer) is a JWT whose claims carry `jti` (its id), `exp`
(not after), `tenant`, `aud` (this gateway's id) and `kind`. `Verifier.verify` returns the claims or raises
`Refused` with a reason a person can act on; replays are the ledger's business (edge.downlink.ledger), since
only it remembers ids across restarts. joserfc does the cryptography (the API's JWT library, maintained).

The platform's public keys come from a `KeyRing`: PEM files and directories of them (`verify_key`,
`verify_keys`), read again whenever one of them changes, so a key is rotated without a restart: during the
rotation both keys are in the ring and a message verifies with either.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey

__all__ = ["ALGORITHM", "KINDS", "KeyRing", "Refused", "Verifier", "load_public_key", "unverified", "utc"]

log = logging.getLogger(__name__)

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


_Stamp = tuple[tuple[str, int, int, int], ...]  # (path, inode, size, mtime) of every key file


class KeyRing:
    """One tenant's platform keys: each path a PEM file or a directory whose `*.pem` files are keys.

    `keys()` looks at the files' inodes, sizes and mtimes (a few stat calls: messages are rare) and reads them
    again when any changed. A change that leaves no readable key (a file half written, a directory emptied)
    keeps the keys read before, logged once, so the link never verifies with nothing; the next change is read.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = tuple(paths)
        self._keys: tuple[ECKey, ...] = ()
        self._stamp: _Stamp | None = None
        self._refused: _Stamp | None = None
        stamp = self._look()
        self._keys, self._stamp = self._read(stamp), stamp  # raises ValueError at start

    def keys(self) -> tuple[ECKey, ...]:
        stamp = self._look()
        if stamp != self._stamp and stamp != self._refused:
            try:
                keys = self._read(stamp)
            except ValueError as exc:
                self._refused = stamp
                log.error(
                    "platform keys not reloaded, the %d read before still verify: %s", len(self._keys), exc
                )
            else:
                log.info("platform keys reloaded: %d from %s", len(keys), ", ".join(map(str, self.paths)))
                self._keys, self._stamp, self._refused = keys, stamp, None
        return self._keys

    def _look(self) -> _Stamp:
        files: list[tuple[str, int, int, int]] = []
        for path in self.paths:
            candidates = sorted(path.glob("*.pem")) if path.is_dir() else [path]
            for file in candidates:
                try:
                    info = os.stat(file)
                except OSError:
                    info = None
                files.append(
                    (str(file), *((info.st_ino, info.st_size, info.st_mtime_ns) if info else (0, -1, 0)))
                )
        return tuple(files)

    def _read(self, stamp: _Stamp) -> tuple[ECKey, ...]:
        if not stamp:
            raise ValueError(f"no key: {', '.join(map(str, self.paths))} hold no *.pem file")
        return tuple(load_public_key(Path(file)) for file, *_ in stamp)


class Verifier:
    """Checks one tenant's messages: signature with one of its keys, then tenant, audience, expiry and shape."""

    def __init__(self, tenant: str, gateway_id: str, keys: KeyRing, *, leeway: float = 30.0) -> None:
        self.tenant = tenant
        self._gateway = gateway_id
        self._keys = keys
        self._leeway = leeway

    def verify(self, token: str, *, now: float | None = None) -> dict[str, Any]:
        if not isinstance(token, str) or len(token) > MAX_MESSAGE or token.count(".") != 2:
            raise Refused(f"not a compact JWS of at most {MAX_MESSAGE} bytes")
        claims: dict[str, Any] | None = None
        keys = self._keys.keys()
        for key in keys:  # during a rotation the old and the new key: either verifies
            try:
                claims = dict(jwt.decode(token, key, algorithms=[ALGORITHM]).claims)
            except BadSignatureError:
                continue
            except JoseError as exc:
                raise Refused(f"unreadable JWS: {exc}") from None
            break
        if claims is None:
            which = "key" if len(keys) == 1 else f"{len(keys)} keys"
            raise Refused(
                f"signature does not verify with tenant {self.tenant}'s {which} (tampered, or signed by another "
                "key)",
                unverified(token),
            )
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
