"""LoopSlice: a long run of work lets other ready work through after each slice, and only then."""

from __future__ import annotations

import asyncio
import time

from edge.ops.slices import LoopSlice


async def test_a_long_run_lets_another_task_through_within_its_slice() -> None:
    async def long_run() -> int:
        turns, ticks = LoopSlice(0.002), 0
        until = time.perf_counter() + 0.1
        while time.perf_counter() < until:  # 100 ms of work in small items
            sum(range(200))
            await turns.tick()
            ticks += 1
        return ticks

    started = time.perf_counter()
    work = asyncio.create_task(long_run())
    await asyncio.sleep(0)  # the run begins; this task is ready again at once, like another tenant's event
    waited = time.perf_counter() - started
    assert await work > 100
    assert waited < 0.05  # through after a slice, not after the whole 100 ms run


async def test_within_its_budget_a_run_does_not_yield() -> None:
    ran: list[str] = []
    turns = LoopSlice(10.0)

    async def other() -> None:
        ran.append("other")

    task = asyncio.create_task(other())
    for _ in range(100):
        await turns.tick()
    ran.append("run")
    await task
    assert ran == ["run", "other"]
