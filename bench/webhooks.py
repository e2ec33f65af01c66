"""Webhook delivery benchmark: throughput to one fast receiver, and what a dead endpoint does to another's
latency. The gateway's real outbox (SQLite file) and dispatcher, receivers as their own processes on
127.0.0.1 (`simulators.webhook_receiver`), so the receivers do not share the dispatcher's CPU time.

    python -m bench.webhooks [--events 5000] [--latency-events 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.procs import free_port, wait_port
from edge.outbox.sqlite import SqliteOutbox
from edge.sdk.events import TELEMETRY, make_event
from edge.sdk.tenancy import TenantContext, tenant_scope
from edge.webhooks import DeliveryPolicy, DestinationPolicy, WebhookDispatcher, WebhookStore

ACME = TenantContext("acme")
LOCAL = DestinationPolicy(["127.0.0.1/32"])


def _receiver(*flags: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.webhook_receiver", "--port", str(port), *flags],
        stdout=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc, f"http://127.0.0.1:{port}/hook"


def _event(n: int) -> object:
    return make_event(
        type=TELEMETRY,
        source="/bench/webhooks",
        subject="roof/inv-01",
        tenant="acme",
        time=time.time(),
        data={
            "site": "roof",
            "device": "inv-01",
            "points": {"p": {"value": n, "unit": "W", "quality": "good"}},
        },
        device="inv-01",
    )


async def _run(events: int, latency_events: int) -> None:
    fast, fast_url = _receiver()
    dead, dead_url = _receiver("--stall")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "outbox.db"
        outbox = SqliteOutbox(path)
        await outbox.open()
        store = WebhookStore(path, LOCAL)
        policy = DeliveryPolicy(timeout=15.0, max_attempts=8, retry_initial=1.0, retry_cap=300.0)
        dispatcher = WebhookDispatcher(outbox, store, [ACME], LOCAL, policy, reload_interval=0.2)
        with tenant_scope(ACME):
            fast_id = store.add(fast_url).subscription.id
        await dispatcher.sync()
        runner = asyncio.create_task(dispatcher.run())
        stats = dispatcher.stats[fast_id]
        try:
            with tenant_scope(ACME):
                started = time.perf_counter()
                for n in range(events):
                    await outbox.append(_event(n))  # type: ignore[arg-type]
                while stats.delivered < events:  # noqa: ASYNC110 - polls the dispatcher's counter
                    await asyncio.sleep(0.01)
                took = time.perf_counter() - started
            print(f"throughput: {events} deliveries to one receiver in {took:.2f} s = {events / took:.0f}/s")
            alone = await _latencies(outbox, stats, latency_events)
            with tenant_scope(ACME):
                store.add(dead_url)
            await asyncio.sleep(0.5)  # picked up; its first attempt now hangs for `timeout`
            beside_dead = await _latencies(outbox, stats, latency_events)
            for label, values in (("alone", alone), ("beside a dead endpoint", beside_dead)):
                q = statistics.quantiles(values, n=100)
                print(
                    f"latency {label}: p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"
                )
        finally:
            runner.cancel()
            await asyncio.wait([runner])
            store.close()
            await outbox.close()
            fast.terminate()
            dead.terminate()


async def _latencies(outbox: SqliteOutbox, stats: object, count: int) -> list[float]:
    """Commit-to-acknowledged latency of `count` events sent one at a time, 20 per second."""
    out = []
    with tenant_scope(ACME):
        for n in range(count):
            before = stats.delivered  # type: ignore[attr-defined]
            started = time.perf_counter()
            await outbox.append_durable(_event(n))  # type: ignore[arg-type]
            while stats.delivered == before:  # type: ignore[attr-defined]  # noqa: ASYNC110
                await asyncio.sleep(0.0005)
            out.append(time.perf_counter() - started)
            await asyncio.sleep(0.05)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--latency-events", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(_run(args.events, args.latency_events))


if __name__ == "__main__":
    main()
