from __future__ import annotations

from pathlib import Path

import typer


def bench(
    scenario: str = typer.Argument(
        "all",
        help="building, building-parts (its cost step by step), stress, compare, smoke, stress-no-point-topics, "
        "coalescing (Modbus read coalescing on vs off), dialects (Sparkplug B and Home Assistant discovery off vs "
        "on), bus (Mosquitto vs NATS JetStream; use --repeat 3), storage (the outbox on SQLite vs PostgreSQL), "
        "scale (one instance on SQLite + Mosquitto, PostgreSQL + Mosquitto and PostgreSQL + NATS, alternating; use "
        "--repeat 3), "
        "noisy-neighbour (a victim tenant's latency with an attacker tenant ramped to saturation, against the "
        "victim alone), or all (building + stress + compare).",
    ),
    duration: float | None = typer.Option(
        None, "--duration", min=1.0, help="Seconds of each measured window (default: per scenario)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Output directory (default: bench-results/<timestamp>/)."
    ),
    peer: bool = typer.Option(
        True,
        "--peer/--no-peer",
        help="Also run the peers (ThingsBoard IoT Gateway, Node-RED + node-red-contrib-modbus) in the compare scenario.",
    ),
    repeat: int = typer.Option(
        1, "--repeat", min=1, max=20, help="Runs per measurement; medians are reported."
    ),
) -> None:
    """Benchmark the real gateway process: throughput, latency, CPU per point, memory, backlog drain."""
    if scenario == "noisy-neighbour":
        import importlib  # the bench package is a development tool: imported only when used, never type-checked

        noisy = importlib.import_module("bench.noisy").main  # its own runs: a victim and an attacker tenant
        argv = ["--repeat", str(repeat if repeat > 1 else 3)]
        argv += ["--duration", str(duration)] if duration else []
        argv += ["--out", str(out)] if out else []
        raise typer.Exit(noisy(argv))
    from bench import run_bench  # the bench package is a development tool: imported only when used

    try:
        run_bench(scenario, duration=duration, out=out, peer=peer, repeat=repeat, say=typer.echo)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted; every child process was stopped", err=True)
        raise typer.Exit(130) from None
