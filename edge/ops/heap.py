"""The garbage collector's pauses, kept short: everything alive once the gateway has started is frozen.

CPython's full (generation 2) collection visits every tracked object while the event loop waits. Most of a
running gateway's ~200k objects are there from its start (imported modules, FastAPI's routes and models, the
configuration, device plans, pollers) and live as long as the process, yet each full collection visited
them all again: 230 to 400 ms per collection on a loaded 2-core box, several times a minute, every event and
request of every tenant waiting behind it (`edge run --loop-probe`, docs/reliability.md). `gc.freeze()` moves
them to a permanent generation that collections skip; what the gateway allocates later is collected as
before. Cost: a reference cycle among frozen objects that becomes garbage later (a device removed live) is
never collected; objects freed by reference counting, nearly all, are freed as usual.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["freeze_startup_heap"]

log = logging.getLogger(__name__)


def freeze_startup_heap() -> int:
    """Collect once, then freeze what survived; returns how many objects are frozen."""
    gc.collect()  # garbage of the start is not frozen with the rest
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("froze the %d objects alive after the start: full collections no longer visit them", frozen)
    return frozen
