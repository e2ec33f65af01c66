"""Delivering one subscription's events: filter, sign, POST, and decide what the outbox consumer does next.

`Deliverer` is the batch handler of the subscription's durable outbox consumer (`edge.module_host.batches.
run_batch_consumer`), so cursors, retries, dead letters and replays follow the kernel's rules. Within a batch,
events go out one at a time, in outbox order. For each event:

- filtered out (site, device or point): passed without a request;
- answered 2xx: delivered;
- anything else (connection error, timeout, 3xx — redirects are never followed —, 4xx, 5xx): retried after
  a capped exponential backoff with jitter, or after the receiver's `Retry-After` if longer (up to the cap); events already delivered in the batch are not sent again. After
  `max_attempts` attempts the event becomes a dead letter with the last reason and the next event goes out;
- 410 Gone: the receiver says the endpoint is gone for good: the subscription is paused, with the reason.

Deliveries are CloudEvents in structured mode: the body is the event exactly as the outbox stores it
(`application/cloudevents+json`), narrowed to the subscribed points when a point filter is set. Every attempt
carries the Standard Webhooks headers: `webhook-id` (the event id: the same on every retry and replay),
`webhook-timestamp` (fresh per attempt) and `webhook-signature` (two signatures while a rotated-out secret
is still in its grace period).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
import orjson

from edge.sdk.backoff import Backoff
from edge.sdk.events import StoredEvent
from edge.sdk.modules import Rejected, RetryLater
from edge.webhooks.guard import DestinationRefused
from edge.webhooks.signing import sign_all
from edge.webhooks.store import Subscription

__all__ = ["Deliverer", "DeliveryPolicy", "DeliveryStats"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
USER_AGENT = "edge-gateway-webhooks/1"
_TRANSPORT_ERRORS = (
    httpx.HTTPError,
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
)


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout: float = 15.0  # seconds per attempt, answer included
    max_attempts: int = 8
    retry_initial: float = 1.0
    retry_cap: float = 300.0


@dataclass
class DeliveryStats:
    """Counters of one subscription (the kernel's batch consumer updates the first five)."""

    name: str
    handled: int = 0
    handler_errors: int = 0
    retries: int = 0
    dead_lettered: int = 0
    delivered: int = 0
    attempts: int = 0
    filtered: int = 0
    gate: None = None  # receivers get every data version as stored (no module-style version gate)


PauseCallback = Callable[[str], Awaitable[None]]


class Deliverer:
    def __init__(
        self,
        subscription: Subscription,
        secrets: Callable[[], list[str]],
        client: httpx.AsyncClient,
        policy: DeliveryPolicy,
        stats: DeliveryStats,
        on_gone: PauseCallback,
        pace: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._sub = subscription
        self._pace = pace  # the tenant's delivery rate: waits while it is over it
        self._secrets = secrets  # newest first; two during a rotation's grace period
        self._client = client
        self._policy = policy
        self._stats = stats
        self._on_gone = on_gone
        self._backoff = Backoff(policy.retry_initial, policy.retry_cap)
        self._attempts: dict[int, int] = {}  # position -> failed attempts of the event being retried
        self._passed: set[int] = set()  # positions of the current batch already delivered or settled
        self._dead: dict[int, str] = {}  # of the current batch: kept across its retries until returned
        self._retry_after = 0.0  # seconds the receiver asked for in its last answer (429, 503)

    async def __call__(self, batch: Sequence[StoredEvent]) -> Rejected | None:
        dead = self._dead
        for row in batch:
            if row.position in self._passed:
                continue
            body = self._select(row)
            if body is None:
                self._stats.filtered += 1
                self._passed.add(row.position)
                continue
            if self._pace is not None:
                await self._pace()
            error = await self._attempt(row.id, body)
            if error is None:
                self._stats.delivered += 1
                self._backoff.reset()
            elif error.startswith("HTTP 410"):
                await self._on_gone(f"the receiver answered {error}; paused")
                raise RetryLater(self._policy.retry_cap, error)
            else:
                failed = self._attempts[row.position] = self._attempts.get(row.position, 0) + 1
                if failed < self._policy.max_attempts:
                    delay = max(self._backoff.next_delay(), min(self._retry_after, self._policy.retry_cap))
                    raise RetryLater(delay, f"{self._sub.url}: {error}")
                dead[row.position] = f"gave up after {failed} attempts; last: {error}"
                log.warning(
                    "webhook %s (tenant %s): event %s dead-lettered: %s",
                    self._sub.id,
                    self._sub.tenant,
                    row.id,
                    dead[row.position],
                )
            self._attempts.pop(row.position, None)
            self._passed.add(row.position)
        self._passed.clear()
        self._dead = {}
        return Rejected(dead) if dead else None

    def _select(self, row: StoredEvent) -> bytes | None:
        """The body to send, or None when the subscription's filters exclude the event."""
        sub = self._sub
        if not (sub.sites or sub.devices or sub.points):
            return row.body
        envelope: dict[str, Any] = orjson.loads(row.body)
        data = envelope.get("data")
        if not isinstance(data, dict):
            return None
        if sub.sites and data.get("site") not in sub.sites:
            return None
        if sub.devices and data.get("device") not in sub.devices:
            return None
        if not sub.points:
            return row.body
        if isinstance(data.get("points"), dict):  # telemetry: keep only the subscribed points
            points = {k: v for k, v in data["points"].items() if k in sub.points}
            if not points:
                return None
            return orjson.dumps({**envelope, "data": {**data, "points": points}})
        return row.body if data.get("point") in sub.points else None

    async def _attempt(self, message_id: str, body: bytes) -> str | None:
        """One signed POST; None when the receiver accepted it, else the reason (never the secret)."""
        self._stats.attempts += 1
        self._retry_after = 0.0
        timestamp = int(time.time())
        headers = {
            "content-type": CONTENT_TYPE,
            "user-agent": USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_all(self._secrets(), message_id, timestamp, body),
        }
        try:
            async with asyncio.timeout(self._policy.timeout):
                response = await self._client.post(self._sub.url, content=body, headers=headers)
        except DestinationRefused as exc:
            return str(exc)
        except TimeoutError:
            return f"no answer within {self._policy.timeout:g} s"
        except _TRANSPORT_ERRORS as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        status = response.status_code
        if 200 <= status < 300:
            return None
        if 300 <= status < 400:
            where = response.headers.get("location", "?")
            return f"HTTP {status} redirect to {where[:200]} (redirects are not followed)"
        self._retry_after = _retry_after(response.headers.get("retry-after"))
        return f"HTTP {status} {response.reason_phrase}".rstrip()


def _retry_after(value: str | None) -> float:
    """Seconds of a `Retry-After: <seconds>` answer (an HTTP date is rare here and read as none)."""
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except ValueError:
        return 0.0
