"""Cooperative time slices: how long one run of work may hold the gateway's shared event loop."""

from __future__ import annotations

import asyncio
import time

__all__ = ["LoopSlice"]


class LoopSlice:
    """Cooperative time slices for long runs of work on the shared event loop.

    Tenants share the loop, and asyncio runs each callback to its next `await`: a task publishing a batch of
    300 events holds the loop for all of them, and another tenant's event that became ready meanwhile waits
    behind the whole batch. A loop that calls `await slice.tick()` between items yields (`sleep(0)`) once it
    has held the loop for `budget` seconds: whatever became ready meanwhile (other tenants' events, polls, API
    answers) runs first, then the work goes on. Fairness in time rather than in items, so a slow or busy
    machine gets shorter runs, not longer waits."""

    def __init__(self, budget: float = 0.001) -> None:
        self.budget = budget
        self._ends = time.perf_counter() + budget

    async def tick(self) -> None:
        if time.perf_counter() >= self._ends:
            await asyncio.sleep(0)
            self._ends = time.perf_counter() + self.budget
