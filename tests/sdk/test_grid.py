"""Periodic work on one grid of the loop's clock (edge.sdk.grid): tasks of one period wake in one pass."""

from __future__ import annotations

import asyncio

import pytest

from edge.sdk.grid import HOUSEKEEPING_PHASE, housekeeping_tick, next_tick, sleep_until, sleep_until_next_tick


def test_next_tick_is_the_next_multiple_even_from_a_sum_of_periods() -> None:
    assert next_tick(12.3, 1.0) == 13.0
    assert next_tick(13.0, 1.0) == 14.0  # strictly after: a task on the grid moves on
    on_grid = 0.1 + 0.1 + 0.1  # 0.30000000000000004: the same point as 0.3, not the one before
    assert next_tick(on_grid, 0.1) == pytest.approx(0.4)
    assert next_tick(0.3 - 1e-12, 0.1) == pytest.approx(0.4)


def test_housekeeping_runs_half_a_second_off_the_poll_grid() -> None:
    assert HOUSEKEEPING_PHASE == 0.5
    assert housekeeping_tick(10.2, 1.0) == 10.5
    assert housekeeping_tick(10.5, 1.0) == 11.5
    assert housekeeping_tick(10.2, 5.0) == 10.5
    assert housekeeping_tick(10.6, 5.0) == 15.5
    assert housekeeping_tick(10.26, 0.25) == pytest.approx(
        10.5
    )  # a period under the phase: the phase modulo it


async def test_tasks_of_one_period_wake_in_the_same_pass_of_the_loop() -> None:
    loop = asyncio.get_running_loop()
    passes: list[int] = []
    woken: list[tuple[float, int]] = []

    def count_pass() -> None:  # a callback scheduled anew each pass counts the loop's passes
        passes.append(1)
        if len(passes) < 10_000:
            loop.call_soon(count_pass)

    async def periodic() -> None:
        deadline = await sleep_until_next_tick(0.05)
        woken.append((deadline, len(passes)))

    loop.call_soon(count_pass)
    await asyncio.wait_for(asyncio.gather(*(periodic() for _ in range(5))), 2.0)
    assert len({deadline for deadline, _ in woken}) == 1
    assert len({seen for _, seen in woken}) == 1  # all five in one pass: one wakeup of the process


async def test_sleep_until_a_past_deadline_returns_at_once_and_can_be_cancelled() -> None:
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(sleep_until(loop.time() - 1.0), 0.5)
    task = asyncio.create_task(sleep_until(loop.time() + 60.0))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
