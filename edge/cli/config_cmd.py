from __future__ import annotations

from pathlib import Path

import typer

from edge.cli.common import load_or_exit

app = typer.Typer(no_args_is_help=True, help="Check and inspect configuration files.")


@app.command("check")
def check(config: Path = typer.Argument(..., help="Gateway configuration file (TOML).")) -> None:
    """Validate a configuration and the profiles it uses; exits 2 and lists every problem if invalid."""
    loaded, _ = load_or_exit(config, module_secrets=True)
    points = sum(len(d.points) for d in loaded.devices)
    typer.echo(
        f"{config}: OK — {len(loaded.config.tenants)} tenant(s), {len(loaded.config.sites)} site(s), "
        f"{len(loaded.devices)} device(s), {points} point(s)"
    )
