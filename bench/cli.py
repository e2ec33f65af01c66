"""`edge bench` without typer: pick scenarios, run them in one bench environment, write the three outputs."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bench import scenarios as sc_mod
from bench.harness import BenchEnv, run_scenario
from bench.procs import BenchBroker, Children
from bench.report import machine_info, plot, table, targets, write_json

__all__ = ["run_bench"]


def _sigterm_to_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so every `finally` stops its children, as with Ctrl-C


def run_bench(
    scenario: str = "all",
    *,
    duration: float | None = None,
    out: Path | None = None,
    peer: bool = True,
    repeat: int = 1,
    say: Any = print,
) -> dict[str, Any]:
    """Run the named scenario(s); returns the results dict also written to `out/results.json`."""
    if scenario == "bus":
        return _run_bus(duration=duration, out=out, repeat=repeat, say=say)
    chosen = [s.with_options(duration=duration, peer=peer) for s in sc_mod.scenario(scenario)]
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    out = (out or Path("bench-results") / time.strftime("%Y%m%d-%H%M%S")).absolute()
    out.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    results: dict[str, Any] = {"machine": machine_info(), "repeat": repeat, "scenarios": []}
    try:
        with Children() as children:
            broker = BenchBroker(out / "broker", children)
            broker.start()
            env = BenchEnv(out=out, children=children, broker=broker, repeat=repeat, say=say)
            try:
                for s in chosen:
                    results["scenarios"].append(run_scenario(s, env))
                    write_json(out / "results.json", results)  # partial results survive a later failure
            finally:
                if env.postgres is not None:
                    env.postgres.stop("fast")
    finally:
        signal.signal(signal.SIGTERM, previous)
    results["machine"]["git_commit_end"] = machine_info()["git_commit"]  # differs if the tree moved mid-run
    _summarise_ramp(results)
    results["targets"] = targets(results)["checks"]
    write_json(out / "results.json", results)
    png = plot(results, out / "bench.png")
    results["outputs"] = {
        "json": str(out / "results.json"),
        "png": str(png) if png else "not written: matplotlib is not installed (pip install -e '.[dev]')",
    }
    write_json(out / "results.json", results)
    say("")
    say(table(results))
    say("")
    say(f"results: {out / 'results.json'}; plot: {results['outputs']['png']}")
    return results


def _summarise_ramp(results: dict[str, Any]) -> None:
    for s in results["scenarios"]:
        if "highest_sustained" not in s:  # not a ramp
            continue
        best = next((r for r in s["loads"] if r["load"] == s.get("highest_sustained")), None)
        stop = s.get("stopped_at")
        text = (
            f"highest sustained step {best['load']}: {best['delivered_points_per_s']:,.0f} points/s delivered, "
            f"p99 {best['p99_latency_ms']:.0f} ms, {best['cpu_us_per_point'] or 0:.1f} µs CPU/point, "
            f"{best.get('requests_per_device_poll') or 0:.0f} Modbus requests/device/poll, no loss"
            if best
            else "no step sustained"
        )
        if not best and s["loads"] and s["loads"][0].get("requests_per_device_poll"):
            text += f" ({s['loads'][0]['requests_per_device_poll']:.0f} Modbus requests/device/poll)"
        if stop:
            text += f"; stopped at {stop['load']}: {'; '.join(stop['reasons'])}"
        else:
            text += "; every step kept up (raise the ramp to find the limit)"
        s["ramp_summary"] = text


def _run_bus(*, duration: float | None, out: Path | None, repeat: int, say: Any) -> dict[str, Any]:
    """`edge bench bus`: Mosquitto vs NATS JetStream (bench/bus_backends.py); results.json and a summary."""
    from bench.bus_backends import run_bus_backends

    out = (out or Path("bench-results") / time.strftime("%Y%m%d-%H%M%S")).absolute()
    out.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    try:
        with Children() as children:
            measured = run_bus_backends(out, children, repeat=repeat, duration=duration or 10.0, say=say)
    finally:
        signal.signal(signal.SIGTERM, previous)
    results = {"machine": machine_info(), "scenarios": measured}
    write_json(out / "results.json", results)
    for result in measured:
        for backend, medians in result["medians"].items():
            say(
                f"{result['load']} offered, {backend}: {medians['points_per_s']:,.0f} points/s, "
                f"{medians['gateway_cpu_us_per_point']:.1f} µs gateway CPU per point, "
                f"server {medians['server_cpu_pct']:.0f} % CPU (medians of {repeat})"
            )
    say(f"results: {out / 'results.json'}")
    return results
