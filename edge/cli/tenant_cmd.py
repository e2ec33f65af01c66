"""`edge tenant`: list tenants and change their entitlement flags in the configuration file.

The file is edited with its comments kept and validated before it replaces the old one; a running gateway
notices the change within a second and routes the tenant's events to the modules it is now entitled to."""

from __future__ import annotations

from pathlib import Path

import tomlkit
import typer
from rich.console import Console
from rich.table import Table

from edge.cli.common import load_or_exit
from edge.cli.device_cmd import _replace_if_valid

app = typer.Typer(no_args_is_help=True, help="List tenants; entitle or revoke module features live.")
CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")
FLAGS = typer.Argument(..., help="Entitlement flags (a module's manifest names the one it needs).")


@app.command("list")
def list_tenants(config: Path = CONFIG) -> None:
    """Show every tenant with its entitlement flags."""
    loaded, _ = load_or_exit(config)
    table = Table("tenant", "name", "entitlements")
    for tenant in loaded.config.tenants:
        table.add_row(tenant.id, tenant.name, ", ".join(tenant.entitlements) or "-")
    Console().print(table)


@app.command("entitle")
def entitle(
    tenant: str = typer.Argument(..., help="Tenant id."), flags: list[str] = FLAGS, config: Path = CONFIG
) -> None:
    """Give a tenant entitlement flags (exit 1: no such tenant; 2: the result would be invalid)."""
    _change(config, tenant, add=flags, remove=[])


@app.command("revoke")
def revoke(
    tenant: str = typer.Argument(..., help="Tenant id."), flags: list[str] = FLAGS, config: Path = CONFIG
) -> None:
    """Take entitlement flags from a tenant (exit 1: no such tenant; 2: the result would be invalid)."""
    _change(config, tenant, add=[], remove=flags)


def _change(config: Path, tenant: str, add: list[str], remove: list[str]) -> None:
    document = tomlkit.parse(config.read_text())
    tenants = document.get("tenants")
    entries = [t for t in tenants if str(t.get("id")) == tenant] if isinstance(tenants, list) else []
    if not entries:
        known = ", ".join(str(t.get("id")) for t in tenants or []) or "none"
        typer.echo(f"no tenant {tenant!r} in {config} (tenants: {known})", err=True)
        raise typer.Exit(1)
    entry = entries[0]
    old = [str(f) for f in entry.get("entitlements", [])]
    new = [f for f in old if f not in remove] + [f for f in dict.fromkeys(add) if f not in old]
    if new == old:
        typer.echo(f"tenant {tenant!r} entitlements unchanged: {', '.join(new) or '-'}")
        return
    flags = tomlkit.array()
    flags.extend(new)
    entry["entitlements"] = flags
    _replace_if_valid(config, tomlkit.dumps(document), action="changed")
    typer.echo(
        f"tenant {tenant!r} entitlements: {', '.join(new) or '-'} (a running gateway applies this within a second)"
    )
