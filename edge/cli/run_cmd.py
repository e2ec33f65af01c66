from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from edge.bus.broker import BrokerError
from edge.cli.common import load_or_exit, module_secret_issues, setup_logging
from edge.cluster.errors import InstanceTaken
from edge.config import LoadedConfig
from edge.config.history import recover_interrupted
from edge.gateway import Gateway
from edge.ops.eventloop import loop_factory, loop_name
from edge.ops.health import HealthReport
from edge.ops.heap import freeze_startup_heap
from edge.ops.instance import AlreadyRunning
from edge.ops.logs import install_level_signals
from edge.ops.loopprobe import LoopProbe
from edge.ops.sdnotify import notify
from edge.ops.status import STATUS_INTERVAL, StatusSnapshot, status_file, write_status_file
from edge.outbox import StorageUnavailable
from edge.outbox.migrations import SchemaTooNew
from edge.plugins import PluginRegistry
from edge.sdk.grid import housekeeping_tick

log = logging.getLogger(__name__)

EXIT_BROKER = 3
EXIT_RUNNING = 4
EXIT_SHUTDOWN_TIMEOUT = 5
EXIT_SCHEMA = 6  # the outbox was written by a newer release (edge.outbox.migrations)
EXIT_STORAGE = 7  # the outbox's PostgreSQL cannot be reached at start (edge.outbox.postgres)
SHUTDOWN_GRACE = 20.0  # seconds; committed events are safe in the outbox whatever happens after


def run(
    config: Path = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file."),
    log_level: str = typer.Option(
        "INFO", help="DEBUG, INFO, WARNING or ERROR (SIGUSR1: DEBUG, SIGUSR2: back)."
    ),
    log_format: str = typer.Option("text", help="text, kv (key=value) or json."),
    status: bool = typer.Option(False, "--status", help="Print a live status line every two seconds."),
    instance: str | None = typer.Option(
        None,
        "--instance",
        envvar="EDGE_INSTANCE",
        help="Cluster mode: this instance's name (default: the host name); its data directory is "
        "{data_dir}/instances/NAME.",
    ),
    loop_probe: Path | None = typer.Option(
        None,
        "--loop-probe",
        envvar="EDGE_LOOP_PROBE",
        help="Diagnostics: record the event loop's stalls (>= 10 ms), what ran in them and the garbage "
        "collector's pauses; written to this JSON file at the stop (edge.ops.loopprobe). Runs the gateway on asyncio's "
        "own event loop, whose callbacks the probe times.",
    ),
) -> None:
    """Run the gateway until Ctrl-C or SIGTERM (in cluster mode, SIGTERM first hands its devices over)."""
    if log_format not in ("text", "kv", "json"):
        raise typer.BadParameter("text, kv or json", param_hint="--log-format")
    setup_logging(log_level, fmt=log_format)  # type: ignore[arg-type]
    interrupted = recover_interrupted(config)  # a deployment a killed gateway left half-done is undone
    if interrupted is not None:
        log.warning(
            "deployment %s (tenant %s) was interrupted: restored the configuration before it",
            interrupted.label,
            interrupted.tenant,
        )
    loaded, registry = load_or_exit(config)
    if instance is not None:
        if not loaded.config.cluster.enabled:
            raise typer.BadParameter(
                "only in cluster mode ([cluster] enabled = true)", param_hint="--instance"
            )
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", instance):
            raise typer.BadParameter("letters, digits, '.', '_' and '-'", param_hint="--instance")
        loaded = dataclasses.replace(loaded, instance=instance)
    for issue in module_secret_issues(config):  # the module will not start; the gateway still collects data
        log.error("%s", issue)
    printer = StatusPrinter() if status else None
    run_gateway(loaded, registry, printer, loop_probe)


def run_gateway(
    loaded: LoadedConfig,
    registry: PluginRegistry,
    on_status: Callable[[StatusSnapshot], None] | None = None,
    loop_probe: Path | None = None,
) -> None:
    try:
        # the probe times asyncio's own callbacks (asyncio.Handle), which uvloop does not run
        choice = "asyncio" if loop_probe is not None else loaded.config.gateway.event_loop
        with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
            runner.run(_serve(loaded, registry, on_status, loop_probe))
    except BrokerError as exc:  # no mosquitto, a port taken, its users' file gone: one line saying what to do
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_BROKER) from None
    except (AlreadyRunning, InstanceTaken) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_RUNNING) from None
    except SchemaTooNew as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_SCHEMA) from None
    except StorageUnavailable as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_STORAGE) from None


async def _serve(
    loaded: LoadedConfig,
    registry: PluginRegistry,
    on_status: Callable[[StatusSnapshot], None] | None,
    loop_probe: Path | None = None,
) -> None:
    probe = LoopProbe() if loop_probe is not None else None
    if probe is not None:
        probe.start()
    try:
        await _serve_until_stopped(loaded, registry, on_status)
    finally:
        if probe is not None and loop_probe is not None:
            probe.stop()
            probe.write(loop_probe)


async def _serve_until_stopped(
    loaded: LoadedConfig, registry: PluginRegistry, on_status: Callable[[StatusSnapshot], None] | None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    install_level_signals(loop)
    gateway = Gateway(loaded, registry)
    await gateway.start()
    freeze_startup_heap()  # garbage collections no longer stall the loop on what lives as long as the process
    notify("READY=1", f"STATUS=gateway {loaded.config.gateway.id} started")
    status = StatusFile(status_file(loaded.data_dir), loop_name(loop))
    try:
        while not stop.is_set():
            try:  # with the gateway's other periodic work (edge.sdk.grid)
                async with asyncio.timeout_at(housekeeping_tick(loop.time(), STATUS_INTERVAL)):
                    await stop.wait()
            except TimeoutError:
                snapshot = await gateway.status()
                health = await gateway.health.check()
                status.write(snapshot, health)
                if health.live:  # systemd restarts a gateway that stops feeding its watchdog
                    notify("WATCHDOG=1", f"STATUS={health.state}")
                if on_status is not None:
                    on_status(snapshot)
    finally:
        notify("STOPPING=1")
        await _stop_within(gateway, SHUTDOWN_GRACE)
        if on_status is not None:
            sys.stderr.write("\n")


async def _stop_within(gateway: Gateway, grace: float) -> None:
    """Stop the gateway; if that hangs, say exactly where (every task's stack) instead of hanging silently."""
    stopping = asyncio.create_task(gateway.stop(), name="gateway-stop")
    done, _ = await asyncio.wait({stopping}, timeout=grace)
    if done:
        stopping.result()
        return
    log.error("shutdown did not finish within %.0f s; pending tasks:", grace)
    for task in asyncio.all_tasks():
        log.error("task %s is waiting in: %s", task.get_name(), " -> ".join(_await_chain(task)))
    raise SystemExit(EXIT_SHUTDOWN_TIMEOUT)


def _await_chain(task: asyncio.Task[Any]) -> list[str]:
    """file:line of every coroutine the task is awaiting through, outermost first."""
    chain: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and len(chain) < 30:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            chain.append(
                f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} {frame.f_code.co_name}"
            )
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


def write_status(
    path: Path, snapshot: StatusSnapshot, health: HealthReport | None = None, event_loop: str | None = None
) -> None:
    """Replace the status file atomically: `edge status`, scripts and `edge bench` read it while the gateway runs."""
    # shallow: orjson writes the nested dataclasses itself (asdict deep-copies every value, every second)
    body = {field.name: getattr(snapshot, field.name) for field in dataclasses.fields(snapshot)}
    if health is not None:
        body["health"] = health.as_dict()
    body["log_level"] = logging.getLevelName(logging.getLogger().level)
    if event_loop is not None:
        body["event_loop"] = event_loop
    write_status_file(path, body)


class StatusFile:
    """The status file, rewritten every `STATUS_INTERVAL` seconds. A write that fails (data disk full, read-only remount) is
    logged when it starts and when it ends, never raised: the gateway goes on polling and storing what it can,
    and its health report already says why storage fails."""

    def __init__(self, path: Path, event_loop: str | None = None) -> None:
        self.path = path
        self.event_loop = event_loop  # "uvloop" or "asyncio" (edge.ops.eventloop)
        self.failing_since: float | None = None

    def write(self, snapshot: StatusSnapshot, health: HealthReport | None = None) -> None:
        try:
            write_status(self.path, snapshot, health, self.event_loop)
        except OSError as exc:
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                log.error(
                    "cannot write the status file %s: %s; retrying every %g s",
                    self.path,
                    exc,
                    STATUS_INTERVAL,
                )
            return
        if self.failing_since is not None:
            log.warning(
                "status file %s written again after %.0f s", self.path, time.monotonic() - self.failing_since
            )
            self.failing_since = None


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
        # only modules that are behind: six idle modules would push the line off the screen
        behind = {name.removeprefix("module:"): n for name, n in s.module_backlogs.items() if n}
        modules = "".join(f", {name} {n}" for name, n in behind.items())
        sys.stderr.write(
            f"\r[{s.uptime:6.0f}s] devices up {s.devices_up}/{s.devices} | {rate:8.0f} points/s | "
            f"events stored {s.events_stored} published {s.events_published} | "
            f"point updates {s.point_updates_published} | backlog {s.backlog}{modules} | bus {bus}   "
        )
        sys.stderr.flush()
