"""The gateway's event loop: uvloop where it is installed (Linux), else asyncio's own.

In Python 3.11 asyncio's loop is pure Python: its scheduling, timers and socket transports run for every poll,
every Modbus answer and every MQTT acknowledgement. uvloop (libuv, MagicStack) does that work in C and cut the
gateway's CPU per point by ~9% at 0.1 s polls and ~8% in the building mix (`python -m bench.hotpath --against`,
medians of 3, docs/performance.md). `[gateway] event_loop = "asyncio"` keeps asyncio's loop: for a platform
without a uvloop build, or to rule the loop out while debugging.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from typing import Literal

__all__ = ["EventLoopChoice", "loop_factory", "loop_name"]

EventLoopChoice = Literal["uvloop", "asyncio"]

log = logging.getLogger(__name__)


def loop_factory(choice: EventLoopChoice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What `asyncio.Runner(loop_factory=...)` takes: uvloop's loop, or None for asyncio's default."""
    if choice == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:  # not installed here (no build for this platform): asyncio's loop does the same job
        log.warning("uvloop is not installed: the gateway runs on asyncio's own event loop")
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """'uvloop' or 'asyncio': which loop runs the gateway (the status file and `edge status` show it)."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
