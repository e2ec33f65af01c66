"""Soak: the reliability rig for a set time with a random fault every few minutes.

    python -m tests.reliability.soak --minutes 60 --fault-every 120

Faults, one at a time: kill -9 of the gateway (restarted at once), kill -9 of Mosquitto (back after 2 s), a
cloud outage, a flaky uplink (resets, latency, slicing), a wall-clock step of an hour either way (when
libfaketime is installed). Every 5 s it samples the gateway's RSS, open fds, WAL size and cloud backlog; after
each fault it measures how long the backlog of that moment takes to reach the cloud. At the end it drains,
accounts for every acked event (tests/reliability/harness.py: Ledger) and prints a JSON summary; the exit code
is 1 if any acked event was lost, reordered or delivered with other content.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.helpers import MosquittoProcess
from tests.reliability.harness import LIBFAKETIME, ProxyFaults, Rig

FAULTS = ("kill_gateway", "kill_broker", "cloud_outage", "flaky_uplink", "clock_step")


async def _inject(rig: Rig, broker: MosquittoProcess, fault: str, hold: float, rng: random.Random) -> None:
    assert rig.proxy is not None
    if fault == "kill_gateway":
        rig.kill_gateway()
        rig.start_gateway(faketime=LIBFAKETIME.exists())
        await rig.wait_running(30)
    elif fault == "kill_broker":
        broker.kill()
        await asyncio.sleep(min(hold, 2.0))
        broker.start()
    elif fault == "cloud_outage":
        await rig.proxy.set_down(True)
        await asyncio.sleep(hold)
        await rig.proxy.set_down(False)
    elif fault == "flaky_uplink":
        rig.proxy.faults = ProxyFaults(
            latency=0.05, jitter=0.15, reset_rate=0.3, reset_answer_rate=0.1, slice_bytes=1024
        )
        await asyncio.sleep(hold)
        rig.proxy.faults = ProxyFaults()
    elif fault == "clock_step":
        rig.set_clock(rng.choice((-3600, 3600)))
        await asyncio.sleep(hold)
        rig.set_clock(0)


async def soak(
    workdir: Path,
    seconds: float,
    fault_every: float,
    seed: int = 1,
    devices: int = 8,
    hold: float = 10.0,
    sequence: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run the soak for `seconds`; returns the summary (see the module docs). `sequence`: these faults in
    this order (cycled) instead of random ones."""
    rng = random.Random(seed)
    faults = [f for f in FAULTS if f != "clock_step" or LIBFAKETIME.exists()]
    planned = list(sequence)
    (workdir / "broker").mkdir(parents=True, exist_ok=True)
    broker = MosquittoProcess(workdir / "broker")
    broker.start()
    samples: list[dict[str, float]] = []
    injected: list[dict[str, Any]] = []
    try:
        async with Rig(workdir, broker.port, devices=devices, poll_interval=0.2, seed=seed) as rig:
            assert rig.gateway is not None and rig.ledger is not None
            rig.start_gateway(faketime=LIBFAKETIME.exists())
            await rig.wait_running(30)
            start = time.monotonic()
            next_fault = start + fault_every * rng.uniform(0.5, 1.0)
            while time.monotonic() - start < seconds:
                if rig.gateway.alive():
                    samples.append(
                        {"t": time.monotonic() - start, "pid": float(rig.gateway.proc.pid)}  # type: ignore[union-attr]
                        | rig.gateway.resources()
                        | {"backlog": float(rig.cloud_backlog() or 0)}
                    )
                    rig.ledger.sample()
                if time.monotonic() >= next_fault:
                    fault = planned[len(injected) % len(planned)] if planned else rng.choice(faults)
                    hold_for = min(hold, max(1.0, fault_every / 3))
                    t0 = time.monotonic()
                    await _inject(rig, broker, fault, hold_for, rng)
                    t_end = time.monotonic()
                    entry: dict[str, Any] = {"fault": fault, "at": round(t0 - start, 1)}
                    try:
                        await rig.drained(max(60.0, fault_every))
                        entry["recovered_s"] = round(time.monotonic() - t_end, 2)
                    except AssertionError:  # reported, not fatal: the soak goes on and the summary says so
                        entry["recovered_s"] = None
                        entry["undrained"] = _undrained(rig)
                    injected.append(entry)
                    next_fault = time.monotonic() + fault_every * rng.uniform(0.5, 1.0)
                await asyncio.sleep(min(5.0, max(0.2, next_fault - time.monotonic())))
            undrained = None
            try:
                await rig.drained(120)
            except AssertionError:
                undrained = _undrained(rig)
            report = rig.ledger.report(rig.cloud)
            secrets = rig.secret_hits()
    finally:
        broker.kill()
    summary = {
        "seconds": seconds,
        "faults": injected,
        "report": asdict(report),
        "secret_hits": secrets,
        "undrained_at_end": undrained,
    }
    summary.update(_resources(samples))
    return summary


def _undrained(rig: Rig) -> dict[str, Any]:
    """Why acked events did not reach the cloud in time: where they sit in the outbox, and the uplink's state."""
    assert rig.ledger is not None
    report = rig.ledger.report(rig.cloud)
    seen = {e[1] for t in rig.cloud.tenants for e in rig.cloud.received(t)}
    missing = sorted((row[5], row[0], i) for i, row in rig.ledger.acked.items() if i not in seen)
    return {
        "lost": report.lost_cloud,
        "pending": report.pending,
        "missing_positions": [(p, t) for p, t, _ in missing[:10]],
        "cloud_last_requests": [(r.status, r.tenant, r.events, r.reason) for r in rig.cloud.requests[-5:]],
        "gateway_status": rig.gateway.status() if rig.gateway else None,
    }


def _resources(samples: list[dict[str, float]]) -> dict[str, Any]:
    """Growth of RSS and fds within each gateway process's life (restarts reset them), WAL and backlog peaks."""
    by_pid: dict[float, list[dict[str, float]]] = {}
    for s in samples:
        by_pid.setdefault(s["pid"], []).append(s)
    longest = max(by_pid.values(), key=lambda run: run[-1]["t"] - run[0]["t"], default=[])
    warm = [s for s in longest if s["t"] - longest[0]["t"] >= 10.0] or longest
    return {
        "samples": len(samples),
        "longest_run_s": round(longest[-1]["t"] - longest[0]["t"], 1) if longest else 0.0,
        "rss_mb_start": round(warm[0]["rss_mb"], 1) if warm else 0.0,
        "rss_mb_end": round(warm[-1]["rss_mb"], 1) if warm else 0.0,
        "rss_mb_max": round(max((s["rss_mb"] for s in samples), default=0.0), 1),
        "fds_start": int(warm[0]["fds"]) if warm else 0,
        "fds_end": int(warm[-1]["fds"]) if warm else 0,
        "fds_max": int(max((s["fds"] for s in samples), default=0)),
        "wal_mb_max": round(max((s["wal_mb"] for s in samples), default=0.0), 2),
        "backlog_max": int(max((s["backlog"] for s in samples), default=0)),
    }


def healthy(summary: dict[str, Any]) -> bool:
    r = summary["report"]
    return (
        r["lost_cloud"] == 0
        and r["order_violations"] == 0
        and r["content_conflicts"] == 0
        and r["cross_tenant"] == 0
        and not summary["secret_hits"]
        and all(f["recovered_s"] is not None for f in summary["faults"])
        and summary["undrained_at_end"] is None
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument(
        "--fault-every", type=float, default=120.0, help="seconds between faults (randomised 50-100%%)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--workdir", type=Path, default=None, help="default: a fresh temporary directory")
    args = p.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edge-soak-"))
    summary = asyncio.run(soak(workdir, args.minutes * 60, args.fault_every, args.seed, args.devices))
    print(json.dumps(summary, indent=2))
    return 0 if healthy(summary) else 1


if __name__ == "__main__":
    sys.exit(main())
