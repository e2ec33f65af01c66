"""The kernel owns its tasks: each runs supervised, and one that dies of a bug is logged and restarted.

`TaskSupervisor.spawn` starts a named task that restarts with capped backoff after an exception (counted per
name in the `restarts` mapping it was given: `GatewayStats.task_restarts`); a task that returns stays done.
`cancel(prefix)` stops the tasks whose names start with `prefix` (all by default) and waits a grace period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, MutableMapping
from typing import Any

from edge.sdk.backoff import Backoff

__all__ = ["TaskSupervisor"]

log = logging.getLogger(__name__)

_STABLE = 60.0  # seconds; a task that ran this long before crashing restarts from the shortest delay


class TaskSupervisor:
    def __init__(self, restarts: MutableMapping[str, int]) -> None:
        self._restarts = restarts
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, run: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._tasks.append(asyncio.create_task(self._supervise(run, name), name=name))

    async def cancel(self, prefix: str = "", grace: float = 5.0) -> None:
        """Cancel the tasks whose names start with `prefix` and wait up to `grace` seconds for them."""
        tasks = [t for t in self._tasks if t.get_name().startswith(prefix)]
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            log.error("task %s did not stop within %.0f s of being cancelled", task.get_name(), grace)

    async def cancel_one(self, name: str, grace: float = 5.0) -> None:
        """Cancel the task of exactly this name (a device removed live) and forget it."""
        tasks = [t for t in self._tasks if t.get_name() == name]
        self._tasks = [t for t in self._tasks if t.get_name() != name]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)

    async def _supervise(self, run: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        backoff = Backoff(1.0, 30.0)
        while True:
            started = time.monotonic()
            try:
                await run()
                return
            except Exception:
                self._restarts[name] = self._restarts.get(name, 0) + 1
                log.exception("%s crashed; restarting it", name)
            if time.monotonic() - started > _STABLE:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())
