"""The gateway's event-loop stalls in a bench's measured window, from `edge run --loop-probe` (edge.ops.loopprobe).

A stall is a wake-up of the probe's sleeper later than its threshold (10 ms). For a window this gives how
many there were, the worst ones with what ran in them, and the blame summed over all of them: milliseconds
per callback (a task by its coroutine), per garbage-collector generation and outside any callback (select,
the GIL, the OS).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import orjson

__all__ = ["loop_stalls", "run_delay"]


def loop_stalls(path: Path, window: tuple[float, float], worst: int = 5) -> dict[str, Any]:
    """Summary of the stalls in `window` (wall times) of the probe report at `path`."""
    try:
        report = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        return {"error": f"no loop probe report at {path}: {exc}"}
    t0, t1 = window
    stalls = [s for s in report["stalls"] if t0 <= s["at"] <= t1]
    blame: dict[str, float] = {}
    for stall in stalls:
        for ran in stall["ran"]:
            blame[ran["what"]] = blame.get(ran["what"], 0.0) + ran["ms"]
        for gen, ms in stall["gc_ms"].items():
            blame[f"gc generation {gen}"] = blame.get(f"gc generation {gen}", 0.0) + ms
        blame["outside callbacks"] = blame.get("outside callbacks", 0.0) + stall["outside_callbacks_ms"]
    late = sorted((s["late_ms"] for s in stalls), reverse=True)
    busy: dict[str, float] = {}  # callback name -> CPU ms in the window's whole seconds
    longest: dict[str, list[float]] = {}  # callback name -> its longest single run (CPU) in each second
    seconds = [names for second, names in report.get("seconds", {}).items() if t0 <= int(second) < int(t1)]
    for names in seconds:
        for what, (_, _, _, cpu, top) in names.items():
            busy[what] = busy.get(what, 0.0) + cpu
            longest.setdefault(what, []).append(top)
    per_s = max(len(seconds), 1)
    return {
        "stalls": len(stalls),
        "over_20ms": sum(1 for ms in late if ms >= 20),
        "over_50ms": sum(1 for ms in late if ms >= 50),
        "worst_ms": late[:worst],
        "stalled_ms": round(sum(late), 1),
        # of the stalls' waits: the loop computing, and the loop ready to run with no core free (the host)
        "stall_cpu_ms": round(sum(s.get("cpu_ms", 0.0) for s in stalls), 1),
        "stall_no_core_ms": round(sum(s.get("no_core_ms", 0.0) for s in stalls), 1),
        "blame_ms": dict(sorted(((k, round(v, 1)) for k, v in blame.items()), key=lambda kv: -kv[1])[:12]),
        "worst": sorted(stalls, key=lambda s: -s["late_ms"])[:worst],
        # where the loop's time went in the window, stalls or not: CPU ms per second by callback (CPU rather than
        # wall time, which a loaded machine inflates with preemption)
        "busy_cpu_ms_per_s": round(sum(busy.values()) / per_s, 1),
        "busy_cpu_by_name_ms_per_s": {
            what: round(ms / per_s, 2) for what, ms in sorted(busy.items(), key=lambda kv: -kv[1])[:15]
        },
        # who holds the loop longest at once: per name, the median over the window's seconds of its longest
        # single run in CPU ms (one callback: a task's step between two awaits), and the longest of all
        "longest_run_cpu_ms": {
            what: [round(statistics.median(tops), 2), round(max(tops), 2)]
            for what, tops in sorted(longest.items(), key=lambda kv: -statistics.median(kv[1]))[:12]
        },
        "gc_run": report["gc"],
        "full_collections": [c for c in report.get("full_collections", []) if t0 <= c["at"] <= t1],
        "callbacks_run": report["callbacks"],
        "gc_objects": report.get("gc_objects"),
    }


def run_delay(pid: int) -> float | None:
    """Seconds the process's main thread (the gateway's event loop) has waited for a core so far; None off
    Linux. Over a window, its growth is what the shared machine took from the loop."""
    try:
        return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None
