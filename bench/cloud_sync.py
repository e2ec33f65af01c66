"""Cloud sync benchmark: backlog drain after an outage, upload CPU per event, duplicates on a flaky uplink.

    python -m bench.cloud_sync --events 100000 --tenants 2 --points 20
    python -m bench.cloud_sync --events 100000 --ingest 2000      # drain while ingest continues
    python -m bench.cloud_sync --events 50000 --flaky              # 5xx, resets before/after storing, latency

The outbox (real SQLite, WAL, synchronous=FULL) is filled with the backlog an outage leaves behind, then the
cloud_sync module (hosted by the kernel's ModuleHost, exactly as in the gateway) drains it into the cloud
simulator, which runs as its own process. Measured in this process: wall time until every tenant's cloud
cursor reaches the end, and CPU time (user + system, all threads: SQLite reads, gzip, HMAC, httpx). The
simulator's own CPU is not charged. One JSON object is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from edge.module_host.host import ModuleHost
from edge.outbox.sqlite import SqliteOutbox
from edge.plugins import LoadedPlugin, read_manifest
from edge.sdk.events import TELEMETRY, make_event
from edge.sdk.tenancy import TenantContext, tenant_scope

CONSUMER = "module:cloud_sync:uplink"
FLAKY = {"error_rate": 0.1, "reset_rate": 0.05, "reset_after_rate": 0.05, "latency": 0.005, "jitter": 0.02}


def _event(tenant: str, device: str, seq: int, points: int) -> Any:
    data = {
        "device": device,
        "site": "roof",
        "points": {
            f"point_{i:02d}": {
                "value": 1000.0 + i + seq % 100,
                "unit": "W",
                "quality": "good",
                "raw": 10000 + i,
            }
            for i in range(points)
        },
    }
    return make_event(
        type=TELEMETRY,
        source=f"/bench/modbus/{device}",
        subject=f"roof/{device}",
        tenant=tenant,
        time=time.time(),
        data=data,
        device=device,
        sequence=seq,
    )


async def _fill(
    outbox: SqliteOutbox, tenants: list[TenantContext], events: int, devices: int, points: int
) -> int:
    per_tenant = events // len(tenants)
    for ctx in tenants:
        with tenant_scope(ctx):
            for n in range(per_tenant):
                device = f"dev-{n % devices:03d}"
                await outbox.append(_event(ctx.tenant_id, device, n // devices + 1, points))
            await outbox.append_durable(_event(ctx.tenant_id, "marker", 1, 1))
    return per_tenant * len(tenants) + len(tenants)


async def _ingest(
    outbox: SqliteOutbox, tenants: list[TenantContext], rate: float, points: int, stop: asyncio.Event
) -> int:
    """Steady ingest while the backlog drains (`rate` events/s over all tenants)."""
    sent, started = 0, time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        for _ in range(due - sent):
            ctx = tenants[sent % len(tenants)]
            with tenant_scope(ctx):
                await outbox.append(_event(ctx.tenant_id, "live", sent // len(tenants) + 1, points))
            sent += 1
        await asyncio.sleep(0.01)
    return sent


async def _backlog(outbox: SqliteOutbox, tenants: list[TenantContext]) -> int:
    total = 0
    for ctx in tenants:
        with tenant_scope(ctx):
            total += await outbox.backlog(CONSUMER)
    return total


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # one simulator process per tenant (each tenant its own cloud), or one shared by all tenants
    groups = [[t] for t in args.tenant_ids] if args.sim_per_tenant else [list(args.tenant_ids)]
    ports = {t: args.port + i for i, group in enumerate(groups) for t in group}
    command = [sys.executable, "-m", "simulators.cloud", *(["--sink"] if args.sink else []), "--tenants"]
    sims = [
        subprocess.Popen([*command, ",".join(g), "--port", str(args.port + i)], stdout=subprocess.DEVNULL)  # noqa: ASYNC220
        for i, g in enumerate(groups)
    ]
    controls = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{args.port + i}") for i in range(len(groups))]
    try:
        for control in controls:
            for _ in range(200):
                try:
                    await control.get("/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            if args.flaky:
                await control.post("/_sim/faults", content=orjson.dumps(FLAKY))
        figures = await _drain(args, ports, [psutil.Process(p.pid) for p in sims])
        stats = _merge([(await c.get("/_sim/stats")).json() for c in controls])
    finally:
        for control in controls:
            await control.aclose()
        for sim in sims:
            sim.terminate()
            sim.wait(10)
    uploaded = sum(t["unique"] for t in stats["tenants"].values())
    duplicates = sum(t["duplicates"] for t in stats["tenants"].values())
    return {
        **figures,
        "cpu_us_per_event": round(figures["cpu_s"] / max(uploaded, 1) * 1e6, 2),
        "received_unique": uploaded,
        "duplicates": duplicates,
        "duplicate_ratio": round(duplicates / max(uploaded, 1), 5),
        "order_violations": sum(t["order_violations"] for t in stats["tenants"].values()),
        "requests": stats["requests"],
        "statuses": stats["statuses"],
        "flaky": args.flaky,
        "simulators": len(groups),
        "receiver": "sink (auth, HMAC, inflate)" if args.sink else "full (every event parsed and checked)",
    }


async def _drain(
    args: argparse.Namespace, ports: dict[str, int], sims: list[psutil.Process]
) -> dict[str, Any]:
    from cloud_sync import CloudSync

    work = Path(tempfile.mkdtemp(prefix="cloud-bench-"))
    tenants = [TenantContext(t) for t in args.tenant_ids]
    outbox = SqliteOutbox(work / "outbox.db")
    await outbox.open()
    t0 = time.monotonic()
    backlog = await _fill(outbox, tenants, args.events, args.devices, args.points)
    fill_s = time.monotonic() - t0
    host = ModuleHost(outbox, tenants, "bench")
    proc, stop = psutil.Process(), asyncio.Event()
    cpu0, sim0, start = proc.cpu_times(), _cpu(sims), time.monotonic()
    live = (
        asyncio.create_task(_ingest(outbox, tenants, args.ingest, args.points, stop)) if args.ingest else None
    )
    plugin = LoadedPlugin(read_manifest("cloud_sync"), CloudSync)
    hosted = await host.start("cloud_sync", plugin, _config(args, ports, work))
    assert hosted.error is None, hosted.error
    drained_at = None
    while time.monotonic() - start < args.timeout:
        await asyncio.sleep(0.05)
        if await _backlog(outbox, tenants) <= args.ingest * 0.5:  # within half a second of live data
            drained_at = time.monotonic()
            break
    elapsed = (drained_at or time.monotonic()) - start
    cpu1, sim1 = proc.cpu_times(), _cpu(sims)
    stop.set()
    live_events = await live if live else 0
    await host.stop()
    await outbox.close()
    shutil.rmtree(work, ignore_errors=True)
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "backlog_events": backlog,
        "points_per_event": args.points,
        "event_bytes": len(_event("t", "d", 1, args.points).body),
        "tenants": len(tenants),
        "batch_size": args.batch_size,
        "fill_s": round(fill_s, 2),
        "drained": drained_at is not None,
        "drain_s": round(elapsed, 3),
        "drain_events_per_s": round(backlog / elapsed),
        "drain_points_per_s": round(backlog * args.points / elapsed),
        "steady_ingest_events_per_s": args.ingest,
        "live_events_during_drain": live_events,
        "cpu_s": round(cpu, 3),
        "cpu_cores_busy": round(cpu / elapsed, 2),
        "simulator_cores_busy": round((sim1 - sim0) / elapsed, 2),
    }


def _cpu(procs: list[psutil.Process]) -> float:
    return float(sum(t.user + t.system for t in (p.cpu_times() for p in procs)))


def _merge(stats: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"tenants": {}, "requests": 0, "statuses": {}}
    for one in stats:
        out["tenants"].update(one["tenants"])
        out["requests"] += one["requests"]
        for status, n in one["statuses"].items():
            out["statuses"][status] = out["statuses"].get(status, 0) + n
    return out


def _config(args: argparse.Namespace, ports: dict[str, int], work: Path) -> dict[str, Any]:
    tenants = {}
    for tenant in args.tenant_ids:
        os.environ[f"BENCH_SECRET_{tenant.upper()}"] = f"{tenant}-client-secret"
        key = work / f"{tenant}.hmac"
        key.write_text(f"{tenant}-hmac-key")
        key.chmod(0o600)
        url = f"http://127.0.0.1:{ports[tenant]}"
        tenants[tenant] = {
            "endpoint": f"{url}/v1/events",
            "token_url": f"{url}/oauth2/token",
            "client_id": tenant,
            "client_secret": f"env:BENCH_SECRET_{tenant.upper()}",
            "hmac_key": f"file:{key}",
        }
    return {
        "batch_size": args.batch_size,
        "max_concurrent_uploads": args.concurrency,
        "linger": 0.2,
        "backoff_base": 0.05 if args.flaky else 1.0,
        "backoff_cap": 1.0 if args.flaky else 60.0,
        "tenants": tenants,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Cloud sync drain benchmark (see the module docs).")
    parser.add_argument("--events", type=int, default=100_000, help="backlog left by the outage")
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--devices", type=int, default=50, help="devices per tenant")
    parser.add_argument("--points", type=int, default=20, help="points per event (a SunSpec inverter: ~20)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2, help="max_concurrent_uploads")
    parser.add_argument("--ingest", type=float, default=0.0, help="steady ingest (events/s) during the drain")
    parser.add_argument("--flaky", action="store_true", help="5xx, resets and latency at the simulator")
    parser.add_argument("--port", type=int, default=18_443, help="first simulator port")
    parser.add_argument("--sim-per-tenant", action="store_true", help="one simulator process per tenant")
    parser.add_argument(
        "--sink",
        action="store_true",
        help="the simulator verifies and inflates but does not parse each event",
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    args.tenant_ids = [f"tenant{i}" for i in range(1, args.tenants + 1)]
    print(orjson.dumps(asyncio.run(run(args)), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
