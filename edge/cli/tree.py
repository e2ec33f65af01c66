"""The full `edge` command tree: the kernel's command groups, then the plug-ins' (edge.cli.plugin_commands)."""

from __future__ import annotations

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
from edge.cli.root import root_app

__all__ = ["app"]

app = root_app(cls=PluginCommands)

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
