"""`edge tenant`: tenants and their entitlement flags (applied live by a running gateway), one tenant's stored
data (export, erase, move between storage tiers: edge.outbox.router) and, through `credentials_cmd`, its MQTT
users. Entitlements are edited in the configuration file with its comments kept and validated before it
replaces the old one."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import tomlkit
import typer

from edge.cli import credentials_cmd
from edge.cli.common import load_or_exit
from edge.cli.output import JSON_OPTION, Column, emit
from edge.config import LoadedConfig
from edge.config.edit import UnknownTenant, change_entitlements
from edge.ops.instance import AlreadyRunning, InstanceLock
from edge.outbox.router import dedicated_path
from edge.outbox.tenant_ops import erase_tenant, export_tenant, has_rows, move_tenant
from edge.sdk.errors import ConfigError

app = typer.Typer(
    no_args_is_help=True,
    help="Tenants: entitlements (live), data (export, erase, move between tiers), MQTT credentials.",
)
app.add_typer(credentials_cmd.app, name="credentials")

CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")
FLAGS = typer.Argument(..., help="Entitlement flags (a module's manifest names the one it needs).")


def _tier(loaded: LoadedConfig, tenant: str) -> Literal["shared", "dedicated"]:
    """The tenant's SQLite tier; the data commands work on SQLite files (on PostgreSQL: pg_dump, docs/scale.md)."""
    if loaded.config.storage.backend != "sqlite":
        typer.echo(
            "tenant export/erase/move work on the SQLite outbox; on PostgreSQL use its own tools"
            " (pg_dump --schema, DROP SCHEMA/DATABASE: docs/scale.md)",
            err=True,
        )
        raise typer.Exit(2)
    for config in loaded.config.tenants:
        if config.id == tenant and config.storage != "database":
            return config.storage
    typer.echo(f"no tenant {tenant!r} in {loaded.path}", err=True)
    raise typer.Exit(2)


def _database(loaded: LoadedConfig, tenant: str) -> Path:
    if _tier(loaded, tenant) == "dedicated":
        return dedicated_path(loaded.data_dir, tenant)
    return loaded.data_dir / loaded.config.storage.path


def _locked(loaded: LoadedConfig) -> InstanceLock:
    lock = InstanceLock(loaded.data_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        typer.echo(f"{exc}: this needs the gateway stopped", err=True)
        raise typer.Exit(4) from None
    return lock


@app.command("export")
def export(
    tenant: str = typer.Argument(..., help="Tenant id."),
    out: Path = typer.Option(..., "--out", "-o", help="File to write: JSON Lines, one CloudEvent per line."),
    config: Path = CONFIG,
) -> None:
    """Export every stored event of one tenant (works while the gateway runs)."""
    loaded, _ = load_or_exit(config, secrets=False)
    database = _database(loaded, tenant)
    if not database.exists():
        typer.echo(f"{database} does not exist: nothing stored yet", err=True)
        raise typer.Exit(1)
    count = export_tenant(database, tenant, out)
    typer.echo(f"{out}: {count} events of tenant {tenant} (from {database})")


@app.command("erase")
def erase(
    tenant: str = typer.Argument(..., help="Tenant id."),
    config: Path = CONFIG,
    yes: bool = typer.Option(False, "--yes", help="Do not ask (scripts); the gateway must still be stopped."),
) -> None:
    """Erase everything the gateway stores for one tenant. Cannot be undone; the gateway must be stopped."""
    loaded, _ = load_or_exit(config, secrets=False)
    tier = _tier(loaded, tenant)
    database = _database(loaded, tenant)
    if (
        not yes
        and typer.prompt(f"erase all stored data of tenant {tenant!r}? type its id to confirm") != tenant
    ):
        typer.echo("not confirmed; nothing erased", err=True)
        raise typer.Exit(1)
    lock = _locked(loaded)
    try:
        events = erase_tenant(database, tenant, whole_file=tier == "dedicated")
    finally:
        lock.release()
    typer.echo(
        f"erased tenant {tenant}: {events} events ({'deleted ' + str(database) if tier == 'dedicated' else database})"
    )


@app.command("move")
def move(
    tenant: str = typer.Argument(..., help="Tenant id."),
    to: str = typer.Option(..., "--to", help="shared or dedicated."),
    config: Path = CONFIG,
) -> None:
    """Move one tenant's stored data to the other tier and record it in the config; the gateway must be stopped."""
    if to not in ("shared", "dedicated"):
        raise typer.BadParameter("shared or dedicated", param_hint="--to")
    loaded, _ = load_or_exit(config, secrets=False)
    current = _tier(loaded, tenant)
    shared = loaded.data_dir / loaded.config.storage.path
    own = dedicated_path(loaded.data_dir, tenant)
    source, target = (shared, own) if to == "dedicated" else (own, shared)
    if current == to and not has_rows(source, tenant):
        typer.echo(f"tenant {tenant} is already {to}")
        return
    lock = _locked(loaded)
    try:
        result = move_tenant(tenant, source, target, renumber=to == "shared")
        _set_tier(loaded.path, tenant, to)
        if to == "shared":
            own.unlink(missing_ok=True)
            for suffix in ("-wal", "-shm"):
                Path(str(own) + suffix).unlink(missing_ok=True)
    finally:
        lock.release()
    typer.echo(
        f"tenant {tenant}: {result.events} events moved from {source} to {target}; {loaded.path} updated"
    )


def _set_tier(path: Path, tenant: str, tier: str) -> None:
    """Record the tier in the config file, keeping its comments (written atomically)."""
    document = tomlkit.parse(path.read_text())
    for entry in document.get("tenants", []):
        if entry.get("id") == tenant:
            if tier == "shared":
                entry.pop("storage", None)
            else:
                entry["storage"] = tier
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(tomlkit.dumps(document))
    tmp.replace(path)


@app.command("list")
def list_tenants(config: Path = CONFIG, as_json: bool = JSON_OPTION) -> None:
    """Show every tenant with its entitlement flags."""
    loaded, _ = load_or_exit(config, secrets=False)
    rows = [
        {"tenant": t.id, "name": t.name, "entitlements": list(t.entitlements)} for t in loaded.config.tenants
    ]
    columns = [Column("tenant", "tenant"), Column("name", "name")]
    emit(
        rows,
        [*columns, Column("entitlements", "entitlements", lambda e: ", ".join(e) or "-")],
        as_json=as_json,
    )


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
    try:
        old, new = change_entitlements(config, tenant, add=add, remove=remove)
    except UnknownTenant as exc:
        typer.echo(str(exc.args[0]), err=True)
        raise typer.Exit(1) from None
    except ConfigError as exc:
        typer.echo(
            f"not changed: the configuration would be invalid ({len(exc.issues)} problem(s)):", err=True
        )
        for issue in exc.issues:
            typer.echo(f"  {issue}", err=True)
        raise typer.Exit(2) from None
    if new == old:
        typer.echo(f"tenant {tenant!r} entitlements unchanged: {', '.join(new) or '-'}")
        return
    typer.echo(
        f"tenant {tenant!r} entitlements: {', '.join(new) or '-'} (a running gateway applies this within a second)"
    )
