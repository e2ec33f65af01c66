"""Standard Webhooks signatures (https://www.standardwebhooks.com), written against the spec.

The signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`, signed with HMAC-SHA256 under the
subscription's secret, sent as `webhook-signature: v1,<base64 signature>`. Secrets are `whsec_` followed by the
base64 of 32 random bytes (the spec allows 24 to 64). The few lines are ours, not a dependency: the tests check
them against the spec's published vector and the official `standardwebhooks` library.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
SIGNATURE_VERSION = "v1"


def new_secret() -> str:
    """A fresh per-subscription secret, shown to the user once."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret; raises ValueError for anything else."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except ValueError:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"a webhook secret holds 24 to 64 bytes, this one {len(key)}")
    return key


def sign_all(secrets: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header under several secrets (during a rotation): space-separated."""
    return " ".join(sign(secret, message_id, timestamp, body) for secret in secrets)


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<signature>` of a delivery attempt under one secret."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"
