"""Periodic work on one grid of the event loop's clock, so that periodic tasks wake the process together.

Every time the gateway goes idle and is woken again costs CPU whatever the work then is: on the 2-core VM of
docs/performance.md an asyncio loop that sleeps and wakes spends 0.2 to 0.4 ms of CPU per wakeup, more than a whole
poll of 50 registers. A task that sleeps "one period from now" wakes the process on its own; a task that sleeps
until the next multiple of its period on the loop's clock (`next_tick`) wakes it together with every other task
of the same or a dividing period, and with the polls of that interval (edge.devices.polling aligns them too).
The loop runs all timers of one deadline in one pass, so ten such tasks cost one wakeup, not ten.

Polls run on the grid itself; the kernel's periodic work (status, health, retention, reloads, module ticks) runs
`HOUSEKEEPING_PHASE` after it (`sleep_until_next_tick`), so that a poll round at whole seconds never waits
behind that work: two wakeups a second at 1 s polls, whatever the number of devices and periodic tasks.
"""

from __future__ import annotations

import asyncio
import math

__all__ = ["HOUSEKEEPING_PHASE", "housekeeping_tick", "next_tick", "sleep_until", "sleep_until_next_tick"]

HOUSEKEEPING_PHASE = 0.5  # seconds after the poll grid that periodic work runs (modulo its period)

# A deadline computed from a sum of periods may sit a hair below the grid point it means (0.1 * 3 is not 0.3):
# it still counts as that point, not as the one before it.
_GRID_TOLERANCE = 1e-9


def next_tick(now: float, period: float, phase: float = 0.0) -> float:
    """The first `phase` + a multiple of `period` on the loop's clock strictly after `now` (`period` > 0)."""
    return (math.floor((now - phase) / period + _GRID_TOLERANCE) + 1) * period + phase


async def sleep_until(deadline: float) -> None:
    """Sleep until `deadline` on the running loop's clock, exactly: tasks with the same deadline wake together
    (`asyncio.sleep` would add its delay to a clock read a little later in each task)."""
    loop = asyncio.get_running_loop()
    woken = loop.create_future()
    timer = loop.call_at(deadline, _wake, woken)
    try:
        await woken
    finally:
        timer.cancel()


def housekeeping_tick(now: float, period: float) -> float:
    """The next deadline of periodic work of `period` seconds: `HOUSEKEEPING_PHASE` off the poll grid."""
    return next_tick(now, period, HOUSEKEEPING_PHASE % period)


async def sleep_until_next_tick(period: float) -> float:
    """Sleep until the next housekeeping tick of `period` (`housekeeping_tick`); returns that deadline (the
    caller can measure how late it woke)."""
    deadline = housekeeping_tick(asyncio.get_running_loop().time(), period)
    await sleep_until(deadline)
    return deadline


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)
