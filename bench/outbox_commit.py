"""Micro-benchmark of the outbox's group commit: CPU per commit and per event, in this process.

One commit here is what one poll burst of the `hotpath` load costs the outbox: `--events` telemetry events of
`--points` points each, appended together and committed as one batch (WAL, `synchronous=FULL`), with two
consumers' cursors moved in between, as the MQTT publisher does. CPU is the process's (every thread: the
SQLite thread's work counts), wall time beside it; medians of `--repeat` runs.

    python -m bench.outbox_commit --commits 300 --events 20 --points 50 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from edge.outbox.sqlite import SqliteOutbox
from edge.sdk.events import TELEMETRY, make_event
from edge.sdk.tenancy import TenantContext, tenant_scope

__all__ = ["main", "run_once"]


async def run_once(
    path: Path, commits: int, events: int, points: int, synchronous: str = "full"
) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for `commits` commits of `events` events each."""
    outbox = SqliteOutbox(path, synchronous=synchronous)
    await outbox.open()
    ctx = TenantContext("acme")
    data = {
        "device": "dev-001",
        "site": "acme-site",
        "points": {f"r{i:04d}": {"value": i, "unit": "W", "quality": "good"} for i in range(points)},
    }
    try:
        with tenant_scope(ctx):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for c in range(commits):
                for e in range(events):
                    seq = c * events + e + 1
                    event = make_event(
                        type=TELEMETRY,
                        source="/bench/modbus/dev",
                        subject="acme-site/dev",
                        tenant="acme",
                        time=time.time(),
                        data=data,
                        device=f"dev-{e:03d}",
                        sequence=seq,
                    )
                    if e == events - 1:
                        await outbox.append_durable(event)  # the burst's commit is done
                    else:
                        await outbox.append(event)
                outbox.set_cursor("mqtt", outbox.last_position)
                outbox.set_cursor("module:x:0", outbox.last_position)
            return time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await outbox.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.outbox_commit", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--synchronous", default="full", help="the outbox's SQLite synchronous setting")
    args = parser.parse_args(argv)
    per_commit, per_event, wall = [], [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            cpu, spent = asyncio.run(
                run_once(Path(tmp) / "outbox.db", args.commits, args.events, args.points, args.synchronous)
            )
        per_commit.append(cpu / args.commits * 1e6)
        per_event.append(cpu / (args.commits * args.events) * 1e6)
        wall.append(spent / args.commits * 1e3)
    print(
        f"outbox commit ({args.events} events x {args.points} points, synchronous={args.synchronous}): "
        f"CPU {statistics.median(per_commit):.0f} µs/commit, {statistics.median(per_event):.1f} µs/event "
        f"(includes building the events), wall {statistics.median(wall):.2f} ms/commit; medians of {args.repeat}"
    )


if __name__ == "__main__":
    main()
