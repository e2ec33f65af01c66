"""`edge bench bus`: one load through the real gateway process on each bus backend, medians of `repeat` runs.

Backends: Mosquitto (the bench broker, `[bus] mode = "external"`, the embedded broker's code path) and NATS
JetStream (a bench nats-server with JetStream and MQTT on, `[bus] mode = "nats"`: every event stored in the
tenant's stream and acknowledged before the outbox cursor moves). Per run: points read per second (the
gateway's own counter over the window), events published per second, gateway CPU µs per point read, the
server's CPU, and that the publisher's backlog drains afterwards. The same simulator fleet serves every run.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.fleet import Fleet, write_gateway_config
from bench.procs import BenchBroker, Children, ProcessCpu, free_port, wait_port
from bench.runners import GatewayProcess
from bench.scenarios import DeviceGroup, Load
from edge.bus.nats_access import NatsUser, server_config

__all__ = ["GATEWAY_USER", "LOADS", "BenchNats", "bus_lines", "run_bus_backends"]

# 100 devices x 50 registers, two tenants: every 0.5 s (10,000 points/s, 200 events/s), then every 0.125 s
# (40,000 points/s, 800 events/s), near where the gateway stops keeping up on a 2-core machine
LOADS = tuple(
    Load(label, (DeviceGroup("bank", "modbus", "bank", 100, 50, interval, "dev", per_process=20),))
    for label, interval in (("10k", 0.5), ("40k", 0.125))
)
_WARMUP = 3.0
GATEWAY_USER = NatsUser("gateway", "bench")


class BenchNats:
    """A bench nats-server: JetStream in its own store, MQTT on, the tenants' accounts (edge.bus.nats_access)."""

    def __init__(self, workdir: Path, children: Children, tenants: tuple[str, ...]) -> None:
        # a fresh JetStream store per instance: a run never reads another run's streams
        self.workdir, self.children = workdir, children
        self.port, self.mqtt_port = free_port(), free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "nats.conf"
        self.conf.write_text(
            server_config(
                server_name=f"edge-bench-{self.port}",
                host="127.0.0.1",
                port=self.port,
                mqtt_port=self.mqtt_port,
                store_dir=str(workdir / "jetstream"),
                prefix="edge",
                gateway=GATEWAY_USER,
                tenants={t: [NatsUser(f"{t}-reader", "bench")] for t in tenants},
            )
        )
        self.proc: Any = None

    def start(self) -> None:
        self.proc = self.children.spawn(["nats-server", "-c", str(self.conf)], log=self.workdir / "nats.log")
        wait_port(self.port, 10.0, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.children.stop(self.proc, grace=10.0)
            self.proc = None


def bus_lines(backend: str, port: int) -> tuple[str, ...]:
    if backend == "mosquitto":
        return ('mode = "external"', 'host = "127.0.0.1"', f"port = {port}")
    return (
        'mode = "nats"',
        f'username = "{GATEWAY_USER.name}"',
        f'password = "{GATEWAY_USER.password}"',
        f'nats = {{ servers = ["nats://127.0.0.1:{port}"] }}',
    )


def _one_run(
    backend: str, fleet: Fleet, run_dir: Path, children: Children, duration: float
) -> dict[str, Any]:
    server: BenchBroker | BenchNats
    if backend == "mosquitto":
        server = BenchBroker(run_dir / "broker", children)
    else:
        server = BenchNats(run_dir / "nats", children, fleet.load.tenants)
    server.start()
    config = write_gateway_config(
        run_dir / "edge.toml", fleet, broker_port=server.port, bus=bus_lines(backend, server.port)
    )
    gw = GatewayProcess(config, children)
    try:
        gw.start()
        gw.wait_ready(fleet.load.devices)
        time.sleep(_WARMUP)
        server_cpu = ProcessCpu([server.proc.pid])
        s0, c0, b0, t0 = gw.status() or {}, gw.cpu_seconds(), server_cpu.seconds(), time.time()
        time.sleep(duration)
        s1, c1, b1, t1 = gw.status() or {}, gw.cpu_seconds(), server_cpu.seconds(), time.time()
        drained = gw.wait_backlog_drained(timeout=30.0)
        exit_code = gw.stop()
    finally:
        gw.stop()
        server.stop()
    span = max(float(s1.get("time", t1)) - float(s0.get("time", t0)), 1e-9)
    points = s1["points_read"] - s0["points_read"]
    return {
        "backend": backend,
        "points_per_s": points / span,
        "events_published_per_s": (s1["events_published"] - s0["events_published"]) / span,
        "gateway_cpu_us_per_point": (c1 - c0) / points * 1e6 if points else None,
        "gateway_cpu_pct": (c1 - c0) / (t1 - t0) * 100,
        "server_cpu_pct": (b1 - b0) / (t1 - t0) * 100,
        "backlog_drained_after_s": drained,
        "exit_code": exit_code,
    }


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def run_bus_backends(
    out: Path, children: Children, *, repeat: int = 3, duration: float = 10.0, say: Any = print
) -> list[dict[str, Any]]:
    """Each load on both backends, `repeat` times; one result (with medians) per load."""
    return [_run_load(load, out / load.label, children, repeat, duration, say) for load in LOADS]


def _run_load(
    load: Load, out: Path, children: Children, repeat: int, duration: float, say: Any
) -> dict[str, Any]:
    """Alternate the backends run by run (so a noisy minute hits both), then report medians."""
    fleet = Fleet(load, out / "sims", children).start()
    runs: dict[str, list[dict[str, Any]]] = {"mosquitto": [], "nats": []}
    try:
        for i in range(repeat):
            for backend, results in runs.items():
                result = _one_run(backend, fleet, out / f"{backend}-{i + 1}", children, duration)
                results.append(result)
                say(
                    f"bus {load.label} {backend} run {i + 1}: {result['points_per_s']:,.0f} points/s, "
                    f"{result['gateway_cpu_us_per_point']:.1f} µs CPU/point, server {result['server_cpu_pct']:.0f} %"
                )
    finally:
        fleet.stop()
    summary = {
        backend: {
            key: _median(results, key)
            for key in (
                "points_per_s",
                "events_published_per_s",
                "gateway_cpu_us_per_point",
                "gateway_cpu_pct",
                "server_cpu_pct",
            )
        }
        for backend, results in runs.items()
    }
    return {
        "scenario": "bus",
        "load": load.label,
        "offered_points_per_s": load.offered_points_per_s,
        "repeat": repeat,
        "medians": summary,
        "runs": runs,
    }
