"""The upload protocol on the wire, as pure functions (documented in cloud_sync/README.md).

A batch is the stored CloudEvents bytes joined into a JSON array (CloudEvents HTTP batch mode), never
re-serialised, gzip-compressed. It carries:

    Content-Type: application/cloudevents-batch+json
    Content-Encoding: gzip
    Authorization: Bearer <OAuth2 client-credentials token of the tenant>
    Idempotency-Key: <hex SHA-256 of the batch's event ids joined by "\\n">   same for every retry of the batch
    X-Edge-Timestamp: <unix seconds when this attempt was signed>            new on every attempt
    X-Edge-Key-Id: <id of the tenant's HMAC key>                              for key rotation
    X-Edge-Signature: v1=<hex HMAC-SHA256(key, "<timestamp>." + body as sent, i.e. compressed)>

The signature covers the bytes as sent, so a receiver verifies before it inflates anything, and refuses a
timestamp outside its window (5 minutes) or a signature it has already seen (replay).
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from edge.sdk import StoredEvent

CONTENT_TYPE = "application/cloudevents-batch+json"
SIGNATURE_HEADER = "X-Edge-Signature"
TIMESTAMP_HEADER = "X-Edge-Timestamp"
KEY_ID_HEADER = "X-Edge-Key-Id"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def idempotency_key(ids: Sequence[str]) -> str:
    """Stable for a batch of events: the same events give the same key, on every retry and after restarts."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def encode_batch(bodies: Sequence[bytes], level: int = 1) -> bytes:
    """`[` + the stored event bytes joined by `,` + `]`, gzip-compressed (deterministic: mtime 0)."""
    return gzip.compress(b"[" + b",".join(bodies) + b"]", compresslevel=level, mtime=0)


def signature(key: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return f"v1={mac.hexdigest()}"


def headers(
    *, key: bytes, key_id: str, timestamp: int, body: bytes, idem_key: str, count: int
) -> dict[str, str]:
    return {
        "Content-Type": CONTENT_TYPE,
        "Content-Encoding": "gzip",
        IDEMPOTENCY_HEADER: idem_key,
        TIMESTAMP_HEADER: str(timestamp),
        KEY_ID_HEADER: key_id,
        SIGNATURE_HEADER: signature(key, timestamp, body),
        "X-Edge-Batch-Size": str(count),
    }


def rejections(payload: bytes, batch: Sequence[StoredEvent]) -> dict[int, str]:
    """Events a 400/422 answer names as bad, by outbox position: `{"rejected": [{"index"|"id", "reason"}]}`.

    Unknown indexes and ids are ignored; an answer that names none returns {} (the caller bisects)."""
    try:
        parsed: Any = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    items = parsed.get("rejected") if isinstance(parsed, Mapping) else None
    if not isinstance(items, list):
        return {}
    by_id = {row.id: row.position for row in batch}
    out: dict[int, str] = {}
    for item in items:
        if not isinstance(item, Mapping):
            continue
        reason = str(item.get("reason") or "refused by the receiver")[:500]
        index = item.get("index")
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(batch):
            out[batch[index].position] = reason
        elif isinstance(item.get("id"), str) and item["id"] in by_id:
            out[by_id[item["id"]]] = reason
    return out


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def describe(payload: bytes, limit: int = 200) -> str:
    """A short, printable summary of an error answer (for logs and `edge sync status`)."""
    text = payload[:limit].decode("utf-8", "replace").replace("\n", " ").strip()
    return text + ("…" if len(payload) > limit else "")
