"""Running a simulator from the command line until Ctrl-C or SIGTERM (shared by the simulators' `__main__`s)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any

__all__ = ["serve_until_signal"]


async def serve_until_signal(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` until it ends or SIGINT / SIGTERM cancels it (its `finally` blocks stop the servers)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await main
