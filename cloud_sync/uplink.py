"""One tenant's uplink: OAuth2 token, signing, one HTTP upload, and what each answer means.

| answer | meaning | outcome |
|---|---|---|
| 2xx, 409 | stored (409: all duplicates, stored before) | delivered |
| 401 | token refused | fetch a new token once and resend; a second 401 → retry later |
| 400, 422 naming events | those events are bad | they become dead letters; the rest is resent now |
| 400, 422 naming none | something in the batch is bad | split in halves until the bad events are alone |
| 413 | batch too large | split in halves; a single event too large is a dead letter |
| 429 | the tenant's rate limit | retry after Retry-After (capped), else the kernel's backoff |
| 408, 5xx, timeout, reset, refused | the endpoint is unwell | the endpoint's circuit opens: every tenant on it
  waits (Retry-After or capped exponential backoff with equal jitter), then one upload probes it |
| other (403, 404, 3xx…) | misconfiguration | retry later with the kernel's backoff, logged |

Only a batch the receiver itself calls bad is dead-lettered; nothing the uplink or our credentials do wrong
ever is, so an outage never empties the queue into the dead-letter table.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from cloud_sync import wire
from cloud_sync._oauth import AsyncOAuth2Client, OAuthError
from edge.sdk import Rejected, RetryLater, StoredEvent

log = logging.getLogger(__name__)

_INLINE_BYTES = 32 << 10  # smaller batches are compressed in the event loop, larger ones in a thread


class Circuit:
    """Health of one endpoint, shared by the tenants that use it, so an outage costs one probe per backoff
    period instead of one per tenant. Delays: Retry-After when given (capped), else capped exponential
    backoff with equal jitter, `ceiling * U(0.5, 1)`: spread like full jitter but with a floor, which keeps
    attempts during a long outage within reliability T04 (≤ 20 in 10 min with base 1 s, cap 60 s)."""

    def __init__(
        self, base: float, cap: float, retry_after_cap: float, rng: random.Random | None = None
    ) -> None:
        self._base, self._cap, self._retry_after_cap = base, cap, retry_after_cap
        self._rng = rng or random.Random()
        self.failures = 0
        self.blocked_until = 0.0
        self.last_error = ""
        self._probe: asyncio.Future[None] | None = None

    async def admit(self) -> None:
        """Return when this caller may send; raise RetryLater while the endpoint is known to be down."""
        while True:
            now = time.monotonic()
            if now < self.blocked_until:
                raise RetryLater(self.blocked_until - now, self.last_error)
            if self.failures == 0:
                return
            if self._probe is None:  # the first caller after a failure probes; the others wait for it
                self._probe = asyncio.get_running_loop().create_future()
                return
            await asyncio.shield(self._probe)

    def success(self) -> None:
        self.failures, self.blocked_until = 0, 0.0
        self._end_probe()

    def failure(self, reason: str, retry_after: float | None = None) -> float:
        self.failures += 1
        if retry_after is not None:
            delay = min(retry_after, self._retry_after_cap)
        else:
            ceiling = min(self._cap, self._base * 2 ** (self.failures - 1))
            delay = ceiling * self._rng.uniform(0.5, 1.0)
        self.blocked_until = time.monotonic() + delay
        self.last_error = reason
        self._end_probe()
        return delay

    def release(self) -> None:
        """The caller stopped without an answer (cancelled): let the next one probe."""
        self._end_probe()

    def _end_probe(self) -> None:
        if self._probe is not None:
            if not self._probe.done():
                self._probe.set_result(None)
            self._probe = None


@dataclass
class UplinkStats:
    requests: int = 0
    batches: int = 0
    events: int = 0
    duplicate_batches: int = 0  # answered 409
    dead_letters: int = 0
    retries: int = 0
    token_fetches: int = 0
    unauthorized: int = 0
    raw_bytes: int = 0
    sent_bytes: int = 0
    last_success: float | None = None
    last_error: str | None = None


class TenantUplink:
    def __init__(
        self,
        tenant: str,
        *,
        endpoint: str,
        client: AsyncOAuth2Client,
        hmac_key: bytes,
        hmac_key_id: str,
        circuit: Circuit,
        gzip_level: int = 1,
        retry_after_cap: float = 600.0,
    ) -> None:
        self.tenant = tenant
        self.endpoint = endpoint
        self._client = client
        self._key = hmac_key
        self._key_id = hmac_key_id
        self._circuit = circuit
        self._level = gzip_level
        self._retry_after_cap = retry_after_cap
        self._encoded: tuple[str, bytes] | None = None  # the last batch, kept for its retries
        self.stats = UplinkStats()

    async def close(self) -> None:
        await self._client.aclose()

    async def deliver(self, batch: Sequence[StoredEvent]) -> Rejected | None:
        """Upload a batch of this tenant's events; the return value and exceptions are the kernel's
        batch outcome (`edge.sdk.modules`)."""
        foreign = [row.id for row in batch if row.tenant != self.tenant]
        if (
            foreign
        ):  # the kernel never does this; refuse rather than send one tenant's data with another's key
            raise RuntimeError(f"batch for {self.tenant!r} holds events of another tenant: {foreign[:3]}")
        rejected: dict[int, str] = {}
        try:
            await self._send(list(batch), rejected)
        except RetryLater as retry:
            self.stats.retries += 1
            self.stats.last_error = retry.reason
            raise
        self.stats.last_success, self.stats.last_error = time.time(), None
        self.stats.dead_letters += len(rejected)
        return Rejected(rejected) if rejected else None

    async def _send(self, rows: list[StoredEvent], rejected: dict[int, str]) -> None:
        """Upload `rows`; isolate whatever the receiver calls bad into `rejected`."""
        if not rows:
            return
        response = await self._post(rows)
        status = response.status_code
        if 200 <= status < 300 or status == 409:
            self.stats.batches += 1
            self.stats.events += len(rows)
            self.stats.duplicate_batches += status == 409
            return
        if status in (400, 422, 413):
            named = wire.rejections(response.content, rows) if status != 413 else {}
            if named:  # those are bad; the others were not stored either, so they go again at once
                rejected.update({p: f"HTTP {status}: {why}" for p, why in named.items()})
                await self._send([r for r in rows if r.position not in named], rejected)
            elif len(rows) == 1:
                rejected[rows[0].position] = f"HTTP {status}: {_refusal(response)}"
            else:  # the receiver did not say which: halve until the bad events are alone
                half = len(rows) // 2
                await self._send(rows[:half], rejected)
                await self._send(rows[half:], rejected)
            return
        after = wire.retry_after(response.headers.get("Retry-After"), time.time())
        if status == 429:
            capped = min(after, self._retry_after_cap) if after is not None else None
            raise RetryLater(capped, "HTTP 429: rate limited by the receiver")
        if status == 401:
            raise RetryLater(None, "HTTP 401: credentials refused after a token refresh")
        log.error(
            "tenant %s: endpoint answers HTTP %d to every batch: %s", self.tenant, status, _refusal(response)
        )
        raise RetryLater(None, f"HTTP {status}: {_refusal(response)}")

    async def _post(self, rows: Sequence[StoredEvent]) -> httpx.Response:
        """One upload (and one resend after a token refresh on 401). Endpoint failures raise RetryLater."""
        key, body = await self._encode(rows)
        for refreshed in (False, True):
            await self._token(force=refreshed)
            signed = wire.headers(
                key=self._key,
                key_id=self._key_id,
                timestamp=int(time.time()),
                body=body,
                idem_key=key,
                count=len(rows),
            )
            await self._circuit.admit()
            self.stats.requests += 1
            try:
                response: httpx.Response = await self._client.post(
                    self.endpoint, content=body, headers=signed
                )
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                raise RetryLater(self._circuit.failure(reason), reason) from None
            except BaseException:
                self._circuit.release()
                raise
            status = response.status_code
            if status >= 500 or status == 408:
                after = wire.retry_after(response.headers.get("Retry-After"), time.time())
                reason = f"HTTP {status}: {_refusal(response)}"
                raise RetryLater(self._circuit.failure(reason, after), reason)
            self._circuit.success()
            if status == 401 and not refreshed:
                self.stats.unauthorized += 1
                continue
            self.stats.sent_bytes += len(body)
            return response
        return response

    async def _token(self, *, force: bool) -> None:
        """A valid token: fetched on first use, refreshed `leeway` before expiry, or now when `force`."""
        client = self._client
        try:
            if force or not client.token:
                self.stats.token_fetches += 1
                await client.fetch_token()
            elif client.token.is_expired(leeway=client.leeway):
                self.stats.token_fetches += 1
                await client.ensure_active_token(client.token)
        except OAuthError as exc:
            raise RetryLater(None, f"token refused: {exc.error}") from None
        except httpx.HTTPError as exc:
            raise RetryLater(None, f"token endpoint: {type(exc).__name__}: {exc}") from None
        except ValueError as exc:
            raise RetryLater(None, f"token endpoint: {exc}") from None

    async def _encode(self, rows: Sequence[StoredEvent]) -> tuple[str, bytes]:
        key = wire.idempotency_key([row.id for row in rows])
        if self._encoded is not None and self._encoded[0] == key:
            return self._encoded
        bodies = [row.body for row in rows]
        raw = sum(len(b) for b in bodies) + len(bodies) + 1
        if raw < _INLINE_BYTES:
            body = wire.encode_batch(bodies, self._level)
        else:  # zlib releases the GIL: the other core compresses while the loop goes on
            body = await asyncio.to_thread(wire.encode_batch, bodies, self._level)
        self.stats.raw_bytes += raw
        self._encoded = (key, body)
        return key, body


def _refusal(response: httpx.Response) -> str:
    return wire.describe(response.content) or response.reason_phrase
