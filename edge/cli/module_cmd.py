"""`edge module list | enable | disable | health | command`: modules of a gateway, running or not.

The desired state goes to `{data_dir}/modules.db`, where a running gateway picks it up within a second and a
stopped one at its next start; health comes from the snapshots the running gateway writes every second, so an
old snapshot shows the gateway is down.

Exit codes: 0 done / all healthy; 1 no such module; 2 invalid configuration; 3 a module is unhealthy, or the
running gateway did not apply the change within --wait seconds; 4 the gateway is not running (health only).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from edge.cli import module_command_cmd
from edge.cli.common import load_or_exit
from edge.cli.output import JSON_OPTION, Column, emit
from edge.config import LoadedConfig
from edge.config.suggest import listing
from edge.module_host.state import ModuleSnapshot, ModuleStateStore
from edge.ops.status import gateway_running

EXIT_UNKNOWN = 1
EXIT_UNHEALTHY = 3
EXIT_NOT_RUNNING = 4

app = typer.Typer(no_args_is_help=True, help=__doc__)
CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")
app.command("command")(module_command_cmd.command)
WAIT = typer.Option(10.0, "--wait", help="Seconds to wait for a running gateway to apply the change.")


_LIST_COLUMNS = [
    Column(key, key.replace("_", " "))
    for key in ("module", "version", "run_mode", "entitlement", "wanted", "state", "handled", "detail")
]


@app.command("list")
def list_modules(config: Path = CONFIG, as_json: bool = JSON_OPTION) -> None:
    """Every configured and installed module: version, run mode, entitlement, wanted and live state."""
    loaded, registry = load_or_exit(config)
    store = ModuleStateStore(loaded.data_dir)
    desired, snapshots = store.desired(), store.snapshots()
    live = _live(snapshots)
    registry.load_all()
    rows: list[dict[str, Any]] = []
    configured = {m.name: m for m in loaded.config.modules}
    for name in sorted(set(configured) | set(registry.modules)):
        plugin, module = registry.modules.get(name), configured.get(name)
        snapshot = snapshots.get(name)
        wanted = "not configured"
        if module is not None:
            record = desired.get(name)
            enabled = record.enabled if record else module.enabled
            wanted = ("enabled" if enabled else "disabled") + (" (operator)" if record else "")
        run_mode = module and (("isolated" if module.command else module.run_mode) or None)
        rows.append(
            {
                "module": name,
                "version": plugin.manifest.version
                if plugin
                else (snapshot.version if snapshot else "sidecar"),
                "run_mode": run_mode or (plugin.manifest.run_mode if plugin else "-"),
                "entitlement": (plugin.manifest.entitlement if plugin else snapshot and snapshot.entitlement)
                or "-",
                "wanted": wanted,
                "state": _state(snapshot, live),
                "handled": snapshot.handled if snapshot and live else None,
                "detail": snapshot.detail if snapshot and live else "",
            }
        )
    emit(rows, _LIST_COLUMNS, as_json=as_json)
    if not live:
        typer.echo(_down(loaded, snapshots), err=as_json)


@app.command("enable")
def enable(
    name: str = typer.Argument(..., help="Module name."), config: Path = CONFIG, wait: float = WAIT
) -> None:
    """Enable a module (re-arms an open circuit breaker); applied live by a running gateway."""
    _set(config, name, True, wait)


@app.command("disable")
def disable(
    name: str = typer.Argument(..., help="Module name."), config: Path = CONFIG, wait: float = WAIT
) -> None:
    """Disable a module; its cursors stay, so enabling it again resumes where it stopped."""
    _set(config, name, False, wait)


_HEALTH_COLUMNS = [
    Column("module", "module"),
    Column("run_mode", "run mode"),
    Column("state", "state"),
    Column("ok", "ok", lambda ok: "yes" if ok else "NO"),
    Column("tenants", "tenants", lambda tenants: ", ".join(tenants) or "-"),
    Column("handled", "handled"),
    Column("refused", "refused", lambda refused: str(refused) if refused else ""),
    Column("restarts", "restarts"),
    Column("detail", "detail"),
]


@app.command("health")
def health(
    name: str = typer.Argument(None, help="One module (default: all)."),
    config: Path = CONFIG,
    as_json: bool = JSON_OPTION,
) -> None:
    """Live health of the modules (exit 3: one is unhealthy; 4: the gateway is not running)."""
    loaded, _ = load_or_exit(config)
    snapshots = ModuleStateStore(loaded.data_dir).snapshots()
    if name is not None:
        _known(loaded, name)
        snapshots = {k: v for k, v in snapshots.items() if k == name}
    live = _live(snapshots)
    rows = [
        {
            "module": snapshot.name,
            "run_mode": snapshot.run_mode,
            "state": snapshot.state,
            "ok": snapshot.ok,
            "tenants": list(snapshot.tenants),
            "handled": snapshot.handled,
            "refused": sum(snapshot.refused.values()),
            "restarts": max(snapshot.launches - 1, 0) if snapshot.run_mode == "isolated" else None,
            "detail": snapshot.detail + (f" (last exit: {snapshot.last_exit})" if snapshot.last_exit else ""),
        }
        for snapshot in sorted(snapshots.values(), key=lambda s: s.name)
    ]
    emit(rows, _HEALTH_COLUMNS, as_json=as_json)
    if not live:
        typer.echo(_down(loaded, snapshots), err=True)
        if snapshots or loaded.config.modules or not gateway_running(loaded.data_dir):
            raise typer.Exit(EXIT_NOT_RUNNING)
        return  # a running gateway without modules: nothing is unhealthy
    if not all(s.ok for s in snapshots.values()):
        raise typer.Exit(EXIT_UNHEALTHY)


def _set(config: Path, name: str, enabled: bool, wait: float) -> None:
    loaded, _ = load_or_exit(config)
    _known(loaded, name)
    store = ModuleStateStore(loaded.data_dir)
    desired = store.set_desired(name, enabled)
    word = "enabled" if enabled else "disabled"
    if not _live(store.snapshots()):
        typer.echo(f"module {name} {word}; the gateway is not running: it applies this when it starts")
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        snapshot = store.snapshots().get(name)
        if (
            snapshot is not None
            and snapshot.written > desired.changed
            and (snapshot.state != "disabled") == enabled
        ):
            typer.echo(f"module {name} {word} in the running gateway (state {snapshot.state})")
            return
        time.sleep(0.2)
    typer.echo(
        f"module {name} {word} is recorded, but the gateway did not apply it within {wait:g} s", err=True
    )
    raise typer.Exit(EXIT_UNHEALTHY)


def _known(loaded: LoadedConfig, name: str) -> None:
    names = [m.name for m in loaded.config.modules]
    if name not in names:
        typer.echo(
            f"no module {name!r} in {loaded.path} (configured: {listing(name, names)}; "
            "add it under [[modules]] first)",
            err=True,
        )
        raise typer.Exit(EXIT_UNKNOWN)


def _live(snapshots: dict[str, ModuleSnapshot]) -> bool:
    return any(s.live for s in snapshots.values())


def _state(snapshot: ModuleSnapshot | None, live: bool) -> str:
    if snapshot is None:
        return "-"
    return snapshot.state if live else f"({snapshot.state} {snapshot.age():.0f} s ago)"


def _down(loaded: LoadedConfig, snapshots: dict[str, ModuleSnapshot]) -> str:
    """Why no module health is live: the gateway does not run, or it runs no module."""
    if not snapshots:
        if gateway_running(loaded.data_dir) and not loaded.config.modules:
            return f"the gateway runs, but {loaded.path.name} configures no module ([[modules]])"
        if gateway_running(loaded.data_dir):
            return "the gateway runs, but has recorded no module health yet (starting?)"
        return "the gateway is not running (no module health recorded yet)"
    age = min(s.age() for s in snapshots.values())
    if any(s.stopped for s in snapshots.values()):
        return f"the gateway is not running: it stopped; its last module health is {age:.0f} s old"
    return f"the gateway is not running: its last module health is {age:.0f} s old"
