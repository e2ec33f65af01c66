"""Module delivery benchmark: events per second from the outbox into a module, by run mode.

    python -m bench.modules [--events 20000] [--json out.json]

The same counting module is hosted in-process, isolated (its own process, through the SDK runner and the
kernel's gRPC socket) and as a sidecar that uses only the generated stubs (examples/sidecar/raw_sidecar.py,
acknowledging without publishing). Each run commits `--events` telemetry events of one tenant before the
module's first start, and times from its start (in-process) or its registration (isolated: process start-up
excluded) until the kernel counts them all acknowledged (`HostedModule.handled`): the drain rate of a
backlog, covering reading the outbox, the version gate, delivery, the handler and the durable cursor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge.module_host.host import HostedModule, ModuleHost
from edge.outbox.sqlite import SqliteOutbox
from edge.plugins import Consumes, LoadedPlugin, Manifest
from edge.sdk.events import TELEMETRY, StoredEvent, make_event
from edge.sdk.modules import Health, ModuleContext
from edge.sdk.tenancy import TenantContext, tenant_scope

ROOT = Path(__file__).resolve().parent.parent
# ruff: noqa: ASYNC110 (bounded waits on the kernel's counters)
TENANT = TenantContext("acme", entitlements=frozenset({"bench", "raw"}))  # raw: the sidecar's flag
MANIFEST = Manifest(
    "count", "module", "1.0.0", ">=1,<2", entitlement="bench", consumes=(Consumes(TELEMETRY, ">=1.0,<2"),)
)
MANIFEST_TOML = """
name = "count"
kind = "module"
version = "1.0.0"
kernel_api = ">=1.0,<2"
entitlement = "bench"
[[consumes]]
type = "org.edgegw.telemetry"
versions = ">=1.0,<2"
"""


class Count:
    """Counts telemetry events: the cheapest handler, so the figure is the kernel's delivery cost."""

    async def on_init(self, context: ModuleContext) -> None:
        self.count = 0
        context.subscribe([TELEMETRY], self.handle)

    async def on_enable(self) -> None: ...
    async def on_disable(self) -> None: ...
    async def on_health_check(self) -> Health:
        return Health(True, f"{self.count} events")

    async def handle(self, event: StoredEvent) -> None:
        self.count += 1


async def _fill(outbox: SqliteOutbox, events: int) -> None:
    points = {f"p{i}": {"value": float(i), "unit": "W", "quality": "good"} for i in range(10)}
    with tenant_scope(TENANT):
        for sequence in range(1, events + 1):
            event = make_event(
                type=TELEMETRY,
                source="/bench/inv",
                subject="roof/inv",
                tenant=TENANT.tenant_id,
                time=time.time(),
                data={"device": "inv", "site": "roof", "points": points},
                device="inv",
                sequence=sequence,
            )
            await outbox.append(event)


async def _measure(mode: str, events: int, folder: Path) -> dict[str, Any]:
    from edge.module_host.supervisor import Isolation, Limits

    outbox = SqliteOutbox(folder / f"{mode}.db", synchronous="normal")
    await outbox.open()
    host = ModuleHost(outbox, [TENANT], "bench")
    isolation = Isolation(host, folder / mode)
    hosted: HostedModule
    await _fill(outbox, events)  # a backlog first: the figure is the module's drain rate
    with tenant_scope(TENANT):
        async with asyncio.timeout(60):
            while await outbox.count() < events:
                await asyncio.sleep(0.05)
    try:
        if mode == "in_process":
            started = time.perf_counter()
            hosted = await host.start("count", LoadedPlugin(MANIFEST, Count), {})
        else:
            manifest_file = folder / "count.toml"
            manifest_file.write_text(MANIFEST_TOML)
            if mode == "isolated":
                command = [
                    sys.executable,
                    "-m",
                    "edge.sdk.runner",
                    "count",
                    "--factory",
                    "bench.modules:Count",
                ]
                command += ["--manifest", str(manifest_file)]
            else:
                command = [sys.executable, str(ROOT / "examples" / "sidecar" / "raw_sidecar.py")]
            env = {"PYTHONPATH": str(ROOT), "EDGE_LOG_LEVEL": "WARNING", "RAW_SIDECAR_PUBLISH": "0"}
            name = "count" if mode == "isolated" else "raw"
            hosted = await isolation.start(
                name, {}, command, manifest=MANIFEST if mode == "isolated" else None, env=env, limits=Limits()
            )
            supervisor = isolation.supervisors[name]
            async with asyncio.timeout(30):
                while supervisor.remote.registered == 0:
                    await asyncio.sleep(0.001)
            started = time.perf_counter()  # from its registration: process start-up is not delivery
        async with asyncio.timeout(300):
            while hosted.handled < events:
                await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
    finally:
        await isolation.stop()
        await host.stop()
        await outbox.close()
    return {
        "mode": mode,
        "events": events,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed),
    }


async def _main(events: int, modes: list[str]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as folder:
        return [await _measure(mode, events, Path(folder)) for mode in modes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.modules", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--modes", default="in_process,isolated,sidecar")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = asyncio.run(_main(args.events, args.modes.split(",")))
    print(f"{'run mode':<12} {'events':>8} {'seconds':>8} {'events/s':>9}")
    for row in results:
        print(f"{row['mode']:<12} {row['events']:>8} {row['seconds']:>8} {row['events_per_s']:>9}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
