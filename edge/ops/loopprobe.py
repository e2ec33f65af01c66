"""Where the event loop's time goes when it stalls: a diagnostic for latency work (`edge run --loop-probe FILE`).

Everything of the gateway shares one event loop, so an event waits behind whatever runs before it. Latency
percentiles on a shared machine mix that with the host's preemption; this probe measures the loop itself:

- **lag**: a task sleeping `interval` and measuring how late it wakes. Every wake-up later than `threshold`
  is a *stall*, recorded with its wall time, so a bench can keep the stalls of its measured window.
- **who ran**: each callback the loop runs (a task's step, a timer, an I/O callback) is timed; the last few
  thousand are kept in a ring, and a stall lists the ones that ran inside it, grouped by name (a task by its
  name with numbers folded, or by its coroutine when it has the default `Task-123`), with count and time.
  Time not covered by callbacks was spent outside them: in `select`, waiting for the GIL, or preempted.
- **CPU or not**: over each stall, the loop thread's CPU time and (Linux) the time it was ready to run but
  had no core (`/proc/thread-self/schedstat`): on a shared machine, a stall of little CPU and much waiting for
  a core is the host's doing, not the gateway's.
- **garbage collection**: every collection is timed by generation (`gc.callbacks`); a stall says how much of
  it was the collector.
- **where the time goes**: every second, the callbacks' time is added up by name, so a bench can show the
  loop's busiest kinds of work in its window, stalls or not.
- **where** (optional, `stacks=True`): a thread looks every two thresholds and samples the loop thread's stack
  while one callback has run longer than `threshold`, so a long callback names its line, not just its task.

Timing a callback is a wrapper around `asyncio.Handle._run`: installed only while a probe runs (it costs
~2 µs per callback: the wall clock and the thread's CPU clock), restored at `stop`. The report is JSON,
written by `write` at the gateway's stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import re
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

__all__ = ["LoopProbe"]

_RING = 16384  # callbacks remembered: more than run between two folds (0.5 s) at saturation (~4,000/s)
_MAX_STALLS = 5000  # stalls kept per report (a stuck loop must not grow the gateway's memory)
_MAX_GC = 5000
_MAX_FULL = 1000
_MAX_SECONDS = 3600  # seconds of per-name loop time kept
_NUMBERS = re.compile(r"\d+")


class LoopProbe:
    """Measures the running loop's stalls and their causes until `stop`; `report()` gives what it saw."""

    def __init__(self, *, interval: float = 0.005, threshold: float = 0.01, stacks: bool = True) -> None:
        self.interval = interval
        self.threshold = threshold
        self._stacks = stacks
        # (perf_counter at its end, seconds, its `_key`, perf_counter at its start, CPU seconds) of the latest
        # callbacks
        self._ring: deque[tuple[float, float, str, float, float]] = deque(maxlen=_RING)
        self._running: float | None = None  # perf_counter at the start of the callback running now
        self._samples: dict[float, list[str]] = {}  # a callback's start -> stacks sampled while it ran long
        self._gc_start = self._gc_cpu = 0.0
        self._gc_visits = 0
        self.full_collections: list[dict[str, Any]] = []
        self._gc: deque[tuple[float, float, int]] = deque(maxlen=_MAX_GC)  # (end, seconds, generation)
        # generation -> [collections, seconds, longest, objects collected, CPU seconds]
        self.gc_totals: dict[int, list[float]] = {g: [0, 0.0, 0.0, 0, 0.0] for g in (0, 1, 2)}
        self.stalls: list[dict[str, Any]] = []
        # wall second -> callback name -> [callbacks, seconds, longest, CPU seconds, longest CPU]: where the
        # loop's time went, second by second (wall time includes preemption by the machine's other processes)
        self.seconds: dict[str, dict[str, list[float]]] = {}
        self._folded = 0.0  # perf_counter of the last fold
        self.callbacks = 0
        self._original: Callable[[asyncio.Handle], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop_thread = 0
        self._started = 0.0
        self._schedstat: int | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Install the timers on the running loop (call from inside it)."""
        self._loop_thread = threading.get_ident()
        with contextlib.suppress(OSError):  # bound to the thread that opens it: the loop's
            self._schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        self._started = time.time()
        self._original = original = asyncio.Handle._run
        ring, probe, thread_time = self._ring, self, time.thread_time

        def timed(handle: asyncio.Handle) -> None:
            key = _key(getattr(handle, "_callback", None))  # read first: a cancelled handle forgets it
            cpu = thread_time()
            started = time.perf_counter()
            probe._running = started
            try:
                original(handle)
            finally:
                probe._running = None
                end = time.perf_counter()
                ring.append((end, end - started, key, started, thread_time() - cpu))
                probe.callbacks += 1

        asyncio.Handle._run = timed  # type: ignore[method-assign,assignment]
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="loop-probe")
        if self._stacks:
            self._sampler = threading.Thread(target=self._sample, name="loop-probe-sampler", daemon=True)
            self._sampler.start()

    def stop(self) -> None:
        if self._original is not None:
            asyncio.Handle._run = self._original  # type: ignore[method-assign,assignment]
            self._original = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
        self._stop.set()
        if self._schedstat is not None:
            os.close(self._schedstat)
            self._schedstat = None
        if self._sampler is not None:
            self._sampler.join(1.0)

    def write(self, path: Path) -> None:
        path.write_bytes(orjson.dumps(self.report(), option=orjson.OPT_INDENT_2))

    def report(self) -> dict[str, Any]:
        self._fold(time.perf_counter())
        tracked = gc.get_objects()
        return {
            "started": self._started,
            "interval_ms": self.interval * 1000,
            "threshold_ms": self.threshold * 1000,
            "callbacks": self.callbacks,
            "gc": {
                str(gen): {
                    "collections": int(n),
                    "total_ms": round(total * 1000, 1),
                    "max_ms": round(top * 1000, 1),
                    "collected": int(collected),
                    "cpu_ms": round(cpu * 1000, 1),
                }
                for gen, (n, total, top, collected, cpu) in self.gc_totals.items()
            },
            "gc_objects": {  # what a full collection visits (frozen objects are not visited)
                "tracked": len(tracked),
                "types": dict(Counter(type(o).__qualname__ for o in tracked).most_common(15)),
                "frozen": gc.get_freeze_count(),
                "thresholds": list(gc.get_threshold()),
            },
            "full_collections": self.full_collections,
            "stalls": self.stalls,
            "seconds": {
                second: {
                    what: [int(n), *(round(seconds * 1000, 2) for seconds in figures)]
                    for what, (n, *figures) in names.items()
                }
                for second, names in self.seconds.items()
            },
        }

    # ---- the lag watcher -------------------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            asked, cpu, queued = time.perf_counter(), time.thread_time(), self._run_delay()
            wall = time.time()
            await asyncio.sleep(self.interval)
            woke = time.perf_counter()
            late = woke - asked - self.interval
            if woke - self._folded >= 0.5:
                self._fold(woke)
            if late >= self.threshold and len(self.stalls) < _MAX_STALLS:
                stall = self._explain(wall + self.interval, asked + self.interval, woke, late)
                # Over the whole wait (`interval` + `late`): the loop thread's CPU, and the time it was ready
                # to run but waited for a core (the shared machine's doing, not the gateway's); the rest is
                # idle in select or waiting for the GIL.
                stall["cpu_ms"] = round((time.thread_time() - cpu) * 1000, 1)
                stall["no_core_ms"] = round((self._run_delay() - queued) * 1000, 1)
                self.stalls.append(stall)

    def _fold(self, now: float) -> None:
        """Add the callbacks that ended since the last fold to the loop's time per second and per name."""
        offset = time.time() - now  # perf_counter -> wall clock
        for end, took, key, _, cpu in reversed(self._ring):
            if end <= self._folded:
                break
            second = self.seconds.setdefault(str(int(end + offset)), {})
            entry = second.setdefault(_label(key), [0, 0.0, 0.0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += took
            entry[2] = max(entry[2], took)
            entry[3] += cpu
            entry[4] = max(entry[4], cpu)
        self._folded = now
        while len(self.seconds) > _MAX_SECONDS:
            self.seconds.pop(next(iter(self.seconds)))

    def _explain(self, wall: float, due: float, woke: float, late: float) -> dict[str, Any]:
        """What ran between `due` (when the watcher should have woken) and `woke` (perf_counter)."""
        ran: dict[str, list[float]] = {}
        stacks: dict[str, int] = {}
        covered = 0.0
        for end, took, key, started, _ in reversed(self._ring):
            if end <= due:
                break
            inside = min(took, end - due)  # a callback that began before `due` counts from `due`
            if inside <= 0:
                continue
            covered += inside
            entry = ran.setdefault(_label(key), [0, 0.0])
            entry[0] += 1
            entry[1] += inside
            for stack in self._samples.pop(started, ()):
                stacks[stack] = stacks.get(stack, 0) + 1
        gc_ms = {0: 0.0, 1: 0.0, 2: 0.0}
        for end, took, gen in reversed(self._gc):
            if end <= due:
                break
            gc_ms[gen] += min(took, end - due) * 1000
        top = sorted(ran.items(), key=lambda kv: -kv[1][1])
        return {
            "at": round(wall, 3),
            "late_ms": round(late * 1000, 1),
            "callbacks": sum(int(n) for n, _ in ran.values()),
            "outside_callbacks_ms": round(max(0.0, (woke - due) - covered) * 1000, 1),
            "gc_ms": {str(g): round(ms, 1) for g, ms in gc_ms.items() if ms >= 0.1},
            "ran": [{"what": what, "n": int(n), "ms": round(s * 1000, 1)} for what, (n, s) in top[:8]],
            "stacks": sorted(stacks.items(), key=lambda kv: -kv[1])[:5],
        }

    def _run_delay(self) -> float:
        """Seconds the loop thread has spent runnable but waiting for a CPU (Linux schedstat; else 0)."""
        if self._schedstat is None:
            return 0.0
        return int(os.pread(self._schedstat, 64, 0).split()[1]) / 1e9

    # ---- garbage collection ----------------------------------------------------------------------------------

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            if info["generation"] == 2 and len(self.full_collections) < _MAX_FULL:
                # what it will visit (counting costs about as much as the collection: full ones only)
                self._gc_visits = len(gc.get_objects(generation=2)) + sum(gc.get_count()[:1])
            self._gc_start, self._gc_cpu = time.perf_counter(), time.thread_time()
            return
        end = time.perf_counter()
        took, gen = end - self._gc_start, info["generation"]
        totals = self.gc_totals[gen]
        totals[0] += 1
        totals[1] += took
        totals[2] = max(totals[2], took)
        totals[3] += info["collected"]
        cpu = time.thread_time() - self._gc_cpu
        totals[4] += cpu
        if gen == 2 and len(self.full_collections) < _MAX_FULL:
            self.full_collections.append(
                {
                    "at": round(time.time(), 3),
                    "ms": round(took * 1000, 1),
                    "cpu_ms": round(cpu * 1000, 1),
                    "objects": self._gc_visits,
                    "collected": info["collected"],
                    "loop_thread": threading.get_ident() == self._loop_thread,
                }
            )
        if threading.get_ident() == self._loop_thread:  # only the loop's own collections stall it
            self._gc.append((end, took, gen))

    # ---- the stack sampler -----------------------------------------------------------------------------------

    def _sample(self) -> None:
        # Each look needs the GIL: while the loop computes, that forces a switch away from it (and, on a
        # loaded machine, perhaps a wait for a core to get it back), so look every other threshold only.
        while not self._stop.wait(2 * self.threshold):
            started = self._running
            if started is None or time.perf_counter() - started < self.threshold:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            if frame is None or self._running != started:
                continue
            samples = self._samples.setdefault(started, [])
            if len(samples) < 50:
                samples.append(_stack(frame))
            if len(self._samples) > _RING:  # callbacks sampled but never part of a stall
                with contextlib.suppress(RuntimeError, StopIteration, KeyError):
                    self._samples.pop(next(iter(self._samples)))


def _key(callback: Any) -> str:
    """A callback as a reader would name it, cheaply (called for every callback; only a string is kept, so the
    probe holds no callback or task alive): a task by its name, or by its coroutine when the name is the
    default `Task-123`; a function by its qualified name."""
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        name = owner.get_name()
        if name.startswith("Task-"):
            return f"task {getattr(owner.get_coro(), '__qualname__', '?')}"
        return f"task {name}"
    target = getattr(callback, "func", callback)  # functools.partial
    module = getattr(target, "__module__", None) or type(target).__module__
    return f"{module}.{getattr(target, '__qualname__', type(target).__name__)}"


@functools.lru_cache(maxsize=4096)
def _label(key: str) -> str:
    """The key with numbers folded: poll-vic-017 and poll-vic-018 are one kind of work."""
    return _NUMBERS.sub("N", key) if key.startswith("task ") else key


def _stack(frame: Any) -> str:
    """The innermost frames of the project's own code (and the very innermost frame), innermost first."""
    frames: list[str] = []
    leaf = True
    while frame is not None and len(frames) < 6:
        code = frame.f_code
        path = code.co_filename
        ours = "/site-packages/" not in path and "/lib/python" not in path
        if ours or leaf:
            short = "/".join(path.rsplit("/", 2)[-2:])
            frames.append(f"{short}:{frame.f_lineno} {code.co_name}")
        leaf = False
        frame = frame.f_back
    return " < ".join(frames)
