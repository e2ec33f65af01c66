"""cProfile for `python -m bench.hotpath --how cprofile`: on PYTHONPATH only for that run's gateway.

The gateway starts profiling its main thread on SIGRTMIN+1 and writes the statistics to $HOTPATH_CPROFILE.<pid>
on SIGRTMIN+2, so only the measured window is profiled (not start-up). Times are the main thread's CPU time. Other processes are
left alone.
"""

import cProfile
import os
import signal
import sys
import time
from types import FrameType

if "edge.cli" in getattr(sys, "orig_argv", []) and os.environ.get("HOTPATH_CPROFILE"):
    # the main thread's CPU time, not wall time: on a shared machine a call that waited for a CPU (a socket
    # send, a rename) would otherwise look as costly as one that computed
    _profiler = cProfile.Profile(time.thread_time_ns, 1e-9)

    def _start(signum: int, frame: FrameType | None) -> None:
        _profiler.enable()

    def _stop(signum: int, frame: FrameType | None) -> None:
        _profiler.disable()
        _profiler.dump_stats(f"{os.environ['HOTPATH_CPROFILE']}.{os.getpid()}")

    signal.signal(signal.SIGRTMIN + 1, _start)
    signal.signal(signal.SIGRTMIN + 2, _stop)
