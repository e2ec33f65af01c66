"""`edge service install|uninstall`: the systemd service (edge.ops.service)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from edge.ops.service import Report, ServiceLayout, install, uninstall

app = typer.Typer(no_args_is_help=True, help="Install the gateway as a systemd service, or remove it.")

ROOT_HELP = "Install into this directory instead of / (images, packages); runs no systemd command."


def _layout(root: Path) -> ServiceLayout:
    layout = ServiceLayout(root=root.resolve())
    if layout.live and os.geteuid() != 0:
        typer.echo("installing a service needs root: run it with sudo (or use --root DIR)", err=True)
        raise typer.Exit(1)
    return layout


def _show(report: Report, live: bool) -> None:
    for path in report.written:
        typer.echo(f"wrote    {path}")
    for path in report.removed:
        typer.echo(f"removed  {path}")
    for path in report.kept:
        typer.echo(f"kept     {path}")
    for command in report.commands:
        typer.echo(f"{'ran     ' if live else 'to run  '} {' '.join(command)}")


@app.command("install")
def install_cmd(
    root: Path = typer.Option(Path("/"), "--root", help=ROOT_HELP),
    gateway_id: str | None = typer.Option(None, "--id", help="Gateway id for a new configuration."),
    python: str = typer.Option(sys.executable, "--python", help="Interpreter with the gateway installed."),
) -> None:
    """Unit, system user (with serial-port group), /etc and /var/lib layout; a starter config if none."""
    layout = _layout(root)
    try:
        report = install(layout, python=python, gateway_id=gateway_id)
    except (OSError, RuntimeError) as exc:
        typer.echo(f"install failed: {exc}", err=True)
        raise typer.Exit(1) from None
    _show(report, layout.live)
    typer.echo(
        f"next: edit {layout.config}, `edge config check {layout.config}`, `systemctl start {layout.name}`"
    )


@app.command("uninstall")
def uninstall_cmd(
    root: Path = typer.Option(Path("/"), "--root", help=ROOT_HELP),
    purge: bool = typer.Option(False, "--purge", help="Also delete configuration and data (the buffer!)."),
) -> None:
    """Stop and remove the service; configuration and data stay unless --purge."""
    layout = _layout(root)
    if purge and not typer.confirm(
        f"delete {layout.config_dir} and {layout.data_dir} with all buffered events?"
    ):
        raise typer.Exit(1)
    try:
        report = uninstall(layout, purge=purge)
    except (OSError, RuntimeError) as exc:
        typer.echo(f"uninstall failed: {exc}", err=True)
        raise typer.Exit(1) from None
    _show(report, layout.live)
