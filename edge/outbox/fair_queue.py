"""The outbox writer's queue, fair between tenants: one bounded FIFO per tenant, taken in turns.

With one shared FIFO, a tenant appending faster than the disk commits fills the queue, and every other
tenant's append then waits behind its backlog (the victim of a noisy neighbour sees the attacker's latency).
Here each tenant has its own bound, so a full queue blocks only the producers of that tenant, and the writer
takes one event per tenant in turn (round robin over the tenants that have events: deficit round robin with a
quantum of one event), so a commit batch holds every waiting tenant's events, whatever the others queued.
Within a tenant the order is kept, which keeps each device's order; across tenants it is not: one tenant's
`append_durable` no longer waits for what another appended before it (positions still follow commit order).

It offers the part of `asyncio.Queue`'s interface the writer uses (`put`, `put_nowait`, `get`, `get_nowait`,
`empty`, `qsize`, `task_done`, `join`), so the writer's loop is unchanged.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["TenantQueue"]

T = TypeVar("T")


def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


class TenantQueue(Generic[T]):
    def __init__(self, maxsize: int, tenant_of: Callable[[T], str]) -> None:
        self.maxsize = maxsize  # per tenant
        self._tenant_of = tenant_of
        self._queues: dict[str, deque[T]] = {}
        self._turns: deque[str] = deque()  # tenants with queued items, in the order they are served
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: dict[str, deque[asyncio.Future[None]]] = {}
        self._size = 0
        self._unfinished = 0
        self._finished = asyncio.Event()
        self._finished.set()

    def qsize(self) -> int:
        return self._size

    def empty(self) -> bool:
        return self._size == 0

    def queued(self, tenant: str) -> int:
        return len(self._queues.get(tenant, ()))

    async def put(self, item: T) -> None:
        """Queue `item` behind its tenant's; waits while that tenant (only) has `maxsize` queued."""
        tenant = self._tenant_of(item)
        queue = self._queues.setdefault(tenant, deque())
        while len(queue) >= self.maxsize:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            putters = self._putters.setdefault(tenant, deque())
            putters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    _wake_one(putters)  # we were given the room: pass it on
                raise
        self._append(tenant, queue, item)

    def put_nowait(self, item: T) -> None:
        """Queue `item` at once; raises `asyncio.QueueFull` when its tenant has `maxsize` queued."""
        tenant = self._tenant_of(item)
        queue = self._queues.setdefault(tenant, deque())
        if len(queue) >= self.maxsize:
            raise asyncio.QueueFull
        self._append(tenant, queue, item)

    def _append(self, tenant: str, queue: deque[T], item: T) -> None:
        if not queue:
            self._turns.append(tenant)
        queue.append(item)
        self._size += 1
        self._unfinished += 1
        self._finished.clear()
        _wake_one(self._getters)

    async def get(self) -> T:
        while not self._size:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:  # the writer's idle timeout
                if waiter.done() and not waiter.cancelled() and self._size:
                    _wake_one(self._getters)
                raise
        return self.get_nowait()

    def get_nowait(self) -> T:
        """The next tenant's oldest item; raises `asyncio.QueueEmpty` when nothing is queued."""
        if not self._turns:
            raise asyncio.QueueEmpty
        tenant = self._turns.popleft()
        queue = self._queues[tenant]
        item = queue.popleft()
        if queue:
            self._turns.append(tenant)  # its next item waits for every other tenant's turn
        self._size -= 1
        putters = self._putters.get(tenant)
        if putters:
            _wake_one(putters)
        return item

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0:
            self._finished.set()

    async def join(self) -> None:
        await self._finished.wait()
