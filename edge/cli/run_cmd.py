from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import typer

from edge.bus.broker import BrokerMissing
from edge.cli.common import load_or_exit, setup_logging
from edge.config import LoadedConfig
from edge.gateway import Gateway, StatusSnapshot
from edge.plugins import PluginRegistry

EXIT_BROKER = 3
STATUS_FILE = "status.json"  # in the data directory, rewritten every second while the gateway runs


def run(
    config: Path = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file."),
    log_level: str = typer.Option("INFO", help="DEBUG, INFO, WARNING or ERROR."),
    status: bool = typer.Option(False, "--status", help="Print a live status line every second."),
) -> None:
    """Run the gateway until Ctrl-C or SIGTERM."""
    setup_logging(log_level)
    loaded, registry = load_or_exit(config)
    printer = StatusPrinter() if status else None
    run_gateway(loaded, registry, printer)


def run_gateway(
    loaded: LoadedConfig, registry: PluginRegistry, on_status: Callable[[StatusSnapshot], None] | None = None
) -> None:
    try:
        asyncio.run(_serve(loaded, registry, on_status))
    except BrokerMissing as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_BROKER) from None


async def _serve(
    loaded: LoadedConfig, registry: PluginRegistry, on_status: Callable[[StatusSnapshot], None] | None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(loaded, registry)
    await gateway.start()
    status_file = loaded.data_dir / STATUS_FILE
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                snapshot = await gateway.status()
                write_status(status_file, snapshot)
                if on_status is not None:
                    on_status(snapshot)
    finally:
        await gateway.stop()
        if on_status is not None:
            sys.stderr.write("\n")


def write_status(path: Path, snapshot: StatusSnapshot) -> None:
    """Replace the status file atomically: scripts and `edge bench` read it while the gateway runs."""
    body = {"pid": os.getpid(), "time": time.time(), **dataclasses.asdict(snapshot)}
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(body))
    tmp.replace(path)


class StatusPrinter:
    """One status line, rewritten in place: devices up, points per second, stored, published, backlog."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None

    def __call__(self, s: StatusSnapshot) -> None:
        now = time.monotonic()
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = (s.points_read - self._last[1]) / (now - self._last[0])
        self._last = (now, s.points_read)
        bus = "connected" if s.bus_connected else "DISCONNECTED"
        sys.stderr.write(
            f"\r[{s.uptime:6.0f}s] devices up {s.devices_up}/{s.devices} | {rate:8.0f} points/s | "
            f"events stored {s.events_stored} published {s.events_published} | "
            f"point updates {s.point_updates_published} | backlog {s.backlog} | bus {bus}   "
        )
        sys.stderr.flush()
