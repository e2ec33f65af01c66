"""Sharing a resource between tenants: token buckets (rates) and weighted-fair turns (slots).

The one home of both: the kernel's per-tenant limits (edge/ops/quotas.py), its fair publisher turns and the
cloud uplink (cloud_sync) use them. The uplink, for example, calls each tenant's batch handler concurrently
(one batch per tenant at a time); before uploading, a handler takes its tenant's rate limit (`TokenBucket`,
events/s), then a turn from the `FairScheduler`, which has `slots` concurrent uploads to hand out. Turns go by start-time fair queueing (SFQ, Goyal et al. 1996):
each request of `cost` events gets the start tag `max(virtual time, the tenant's last finish tag)` and the
finish tag `start + cost / weight`; a free slot goes to the waiting request with the smallest start tag, and
the virtual time becomes that tag. A tenant with a large backlog therefore gets its weighted share and no
more: another tenant's fresh batch, whose finish tag lags, is served next, after at most the uploads already
in flight. Unlike strict priorities (edgeHub's routes), nobody starves (reliability notes, implication 6).
Cost is counted in events (rate limits are in events/s too).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

__all__ = ["FairScheduler", "TokenBucket"]


class TokenBucket:
    """`rate` tokens per second up to `burst`. A take larger than the bucket waits for a full bucket and then
    leaves it in debt, so the long-run rate holds for any batch size."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = asyncio.Lock()  # takers queue in order

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, n: float) -> float:
        """Take `n` tokens, waiting for them; returns the seconds waited (0.0 when they were there).
        `take(0)` waits only until a debt (`charge`) is paid off."""
        async with self._lock:
            self._refill()
            need = min(float(n), self.burst)
            if self._tokens >= need:
                self._tokens -= n
                return 0.0
            started = self._clock()
            while self._tokens < need:
                await asyncio.sleep((need - self._tokens) / self.rate)
                self._refill()
            self._tokens -= n
            return self._clock() - started

    def try_take(self, n: float = 1.0) -> float:
        """Take `n` tokens if they are there and return 0.0; else take nothing and return the seconds until
        they would be (for callers that refuse rather than wait, e.g. an HTTP 429 with Retry-After)."""
        self._refill()
        need = min(float(n), self.burst)
        if self._tokens >= need and not self._lock.locked():
            self._tokens -= n
            return 0.0
        return max((need - self._tokens) / self.rate, 1e-3)

    def charge(self, n: float) -> None:
        """Take `n` tokens after the fact (e.g. handler seconds measured once spent), into debt if need be;
        the next `take` waits for the debt to be paid off."""
        self._refill()
        self._tokens -= n

    @property
    def in_debt(self) -> bool:
        self._refill()
        return self._tokens < 0


class FairScheduler:
    def __init__(self, slots: int, anticipation: float = 0.02) -> None:
        self._free = slots
        self._anticipation = anticipation
        self._vtime = 0.0
        self._weights: dict[str, float] = {}
        self._finish: dict[str, float] = {}
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        # (tenant, its next start tag, expiry) of a slot kept for the tenant that just released it
        self._reserved: tuple[str, float, asyncio.TimerHandle] | None = None
        self.granted: dict[str, int] = {}  # events granted per tenant (for tests and status)

    def add(self, tenant: str, weight: float = 1.0) -> None:
        self._weights[tenant] = weight
        self._finish.setdefault(tenant, 0.0)
        self.granted.setdefault(tenant, 0)

    @asynccontextmanager
    async def turn(self, tenant: str, cost: int) -> AsyncIterator[None]:
        start = max(self._vtime, self._finish[tenant])
        self._finish[tenant] = start + cost / self._weights[tenant]
        reserved = self._reserved
        if reserved is not None and (reserved[0] == tenant or start < reserved[1]):
            reserved[2].cancel()  # ours, or we are entitled before the tenant it was kept for
            self._reserved = None
            self._vtime = start
        elif self._free > 0 and self._head() is None:  # a kept slot is not a free one
            self._free -= 1
            self._vtime = start
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (start, next(self._order), waiter))
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._hand_on()  # the slot was already ours: pass it on
                raise
        self.granted[tenant] += cost
        try:
            yield
        finally:
            self._release(tenant)

    def _release(self, tenant: str) -> None:
        """A tenant finished an upload. If it is entitled to the next turn before everyone waiting (its next
        start tag is smaller), keep the slot for it briefly: with one batch per tenant in flight, a tenant is
        never waiting at the moment its own upload ends, and without this anticipation (Iyer & Druschel 2001)
        turns would simply alternate whatever the weights."""
        head = self._head()
        if head is not None and self._anticipation > 0:
            entitled = max(self._vtime, self._finish[tenant])
            if entitled < head:
                expiry = asyncio.get_running_loop().call_later(self._anticipation, self._expire)
                self._reserved = (tenant, entitled, expiry)
                return
        self._hand_on()

    def _expire(self) -> None:
        self._reserved = None
        self._hand_on()

    def _head(self) -> float | None:
        while self._waiting and self._waiting[0][2].done():  # drop waiters cancelled meanwhile
            heapq.heappop(self._waiting)
        return self._waiting[0][0] if self._waiting else None

    def _hand_on(self) -> None:
        """Give a free slot to the waiting request with the smallest start tag, or free it."""
        if self._head() is not None:
            start, _, waiter = heapq.heappop(self._waiting)
            self._vtime = start
            waiter.set_result(None)
            return
        self._free += 1
