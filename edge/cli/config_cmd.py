from __future__ import annotations

from pathlib import Path

import typer

from edge.bus.broker import running_broker
from edge.bus.listeners import broker_listeners, certificate_problems, port_problems
from edge.cli.common import EXIT_CONFIG, load_or_exit
from edge.config import LoadedConfig

app = typer.Typer(no_args_is_help=True, help="Check and inspect configuration files.")


@app.command("check")
def check(config: Path = typer.Argument(..., help="Gateway configuration file (TOML).")) -> None:
    """Validate a configuration and the profiles it uses; exits 2 and lists every problem if invalid."""
    loaded, _ = load_or_exit(config, module_secrets=True)
    problems = broker_problems(loaded)
    if problems:
        typer.echo(f"{config}: the embedded broker could not start ({len(problems)} problem(s)):", err=True)
        for problem in problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(EXIT_CONFIG)
    points = sum(len(d.points) for d in loaded.devices)
    typer.echo(
        f"{config}: OK — {len(loaded.config.tenants)} tenant(s), {len(loaded.config.sites)} site(s), "
        f"{len(loaded.devices)} device(s), {points} point(s)"
    )


def broker_problems(loaded: LoadedConfig) -> list[str]:
    """Missing certificate files and ports already taken (unless this gateway's own broker holds them)."""
    bus = loaded.config.bus
    if bus.mode != "embedded":
        return []
    listeners = broker_listeners(bus, loaded.path.parent, loaded.data_dir)
    problems = certificate_problems(listeners)
    if running_broker(loaded.data_dir / "broker") is None:
        problems += port_problems(listeners)
    return problems
