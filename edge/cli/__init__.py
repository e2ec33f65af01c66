"""The `edge` command: a thin typer face over the kernel's API, one sub-app per command group. Plug-ins add
their own command groups through the `edge.cli` entry points (edge.cli.plugin_commands, edge.sdk.cli)."""

from __future__ import annotations

import os
from importlib.metadata import version

import typer

from edge.cli import (
    backup_cmd,
    bench_cmd,
    certs_cmd,
    cluster_cmd,
    config_cmd,
    demo_cmd,
    device_cmd,
    events_cmd,
    init_cmd,
    module_cmd,
    point_cmd,
    run_cmd,
    service_cmd,
    simulate_cmd,
    site_cmd,
    status_cmd,
    tenant_cmd,
    user_cmd,
    webhook_cmd,
)
from edge.cli.plugin_commands import PluginCommands
from edge.sdk.version import KERNEL_API_VERSION

app = typer.Typer(
    cls=PluginCommands,
    no_args_is_help=True,
    help="Edge gateway for buildings and industrial sites.",
)  # typer's --install-completion / --show-completion: shell completion of commands, options and plug-ins


def _show_version(asked: bool) -> None:
    if asked:
        typer.echo(f"edge {version('edge-gateway')} (kernel API {KERNEL_API_VERSION})")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Edge gateway for buildings and industrial sites."""


app.command("run")(run_cmd.run)
app.command("demo")(demo_cmd.demo)
app.command("bench")(bench_cmd.bench)
app.command("status")(status_cmd.status)
app.command("init")(init_cmd.init)
app.command("backup")(backup_cmd.backup)
app.command("restore")(backup_cmd.restore)
app.add_typer(config_cmd.app, name="config")
app.add_typer(device_cmd.app, name="device")
app.add_typer(point_cmd.app, name="point")
app.add_typer(site_cmd.app, name="site")
app.add_typer(simulate_cmd.app, name="simulate")
app.add_typer(events_cmd.app, name="events")
app.add_typer(certs_cmd.app, name="certs")
app.add_typer(module_cmd.app, name="module")
app.add_typer(webhook_cmd.app, name="webhook")
app.add_typer(service_cmd.app, name="service")
app.add_typer(tenant_cmd.app, name="tenant")
app.add_typer(user_cmd.app, name="user")
app.add_typer(cluster_cmd.app, name="cluster")


def main() -> None:
    # Everything `edge` writes (outbox with webhook secrets, keys, broker users, status) is the gateway's
    # alone, whatever the calling shell's umask; the kernel creates the data directory 0700 besides.
    os.umask(0o077)
    app(
        prog_name="edge"
    )  # also under `python -m edge.cli`: help, and completion's _EDGE_COMPLETE, say `edge`
