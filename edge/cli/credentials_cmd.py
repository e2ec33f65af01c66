"""`edge tenant credentials` (mounted by tenant_cmd): MQTT users of a tenant, a thin face over `edge.bus.access.AccessStore`.

Changes are written to the broker's password and ACL files and applied at once to a running embedded broker
(SIGHUP: connected clients stay connected). With an external broker, the same files are written and the
command says which files to point Mosquitto at (docs/mqtt-access.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from edge.bus.access import AccessError, AccessStore, MqttUser
from edge.bus.broker import BrokerError, apply_access
from edge.cli.common import load_or_exit
from edge.cli.output import JSON_OPTION, emit_json
from edge.config import LoadedConfig

app = credentials = typer.Typer(
    no_args_is_help=True, help="MQTT users of a tenant: read its topics, write its command topics."
)

EXIT_USAGE = 2

_CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")


@contextmanager
def _access(config: Path, tenant: str) -> Iterator[tuple[AccessStore, LoadedConfig]]:
    loaded, _ = load_or_exit(config)
    if tenant not in loaded.tenant_contexts():
        known = ", ".join(sorted(loaded.tenant_contexts()))
        typer.echo(f"unknown tenant {tenant!r} (known: {known})", err=True)
        raise typer.Exit(EXIT_USAGE)
    store = AccessStore.for_config(loaded.data_dir, loaded.config)
    try:
        yield store, loaded
    except AccessError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_USAGE) from None


def _apply(store: AccessStore, loaded: LoadedConfig) -> None:
    try:
        typer.echo(apply_access(store, loaded.data_dir, loaded.config.bus.mode))
    except BrokerError as exc:
        typer.echo(f"saved, but not applied yet: {exc}", err=True)
        raise typer.Exit(1) from None


def _describe(user: MqttUser, prefix: str) -> str:
    rights = "read" if user.read_only else "read, write commands"
    return f"{user.username}  {rights} on {prefix}/{user.tenant}/#"


@credentials.command("add")
def add(
    tenant: str = typer.Argument(...),
    name: str = typer.Argument(..., help="The local system's name; it logs in as NAME@TENANT."),
    read_only: bool = typer.Option(False, "--read-only", help="May not publish write requests."),
    config: Path = _CONFIG,
) -> None:
    """Create an MQTT user for TENANT; prints its password, which is not shown again."""
    with _access(config, tenant) as (store, loaded):
        user, password = store.add(tenant, name, read_only=read_only)
        typer.echo(_describe(user, loaded.config.bus.topic_prefix))
        typer.echo(f"username: {user.username}\npassword: {password}")
        typer.echo("keep the password: it is stored only as a hash and not shown again")
        _apply(store, loaded)


@credentials.command("list")
def list_(
    tenant: str = typer.Argument(...),
    as_json: bool = JSON_OPTION,
    config: Path = _CONFIG,
) -> None:
    """The tenant's MQTT users (never their passwords)."""
    with _access(config, tenant) as (store, loaded):
        users = store.users(tenant)
    if as_json:
        fields = ("username", "tenant", "name", "read_only", "created", "rotated")
        emit_json([{f: getattr(user, f) for f in fields} for user in users])
        return
    for user in users:
        age = (time.time() - (user.rotated or user.created)) / 86_400
        typer.echo(f"{_describe(user, loaded.config.bus.topic_prefix)}  (password {age:.0f} days old)")
    if not users:
        typer.echo(f"tenant {tenant} has no MQTT users")


@credentials.command("remove")
def remove(
    tenant: str = typer.Argument(...), name: str = typer.Argument(...), config: Path = _CONFIG
) -> None:
    """Delete the user; the broker refuses its next login and its subscriptions receive nothing more."""
    with _access(config, tenant) as (store, loaded):
        store.remove(tenant, name)
        typer.echo(f"removed {name}@{tenant}")
        _apply(store, loaded)


@credentials.command("rotate")
def rotate(
    tenant: str = typer.Argument(...), name: str = typer.Argument(...), config: Path = _CONFIG
) -> None:
    """A new password for the user (the old one stops working); prints it once."""
    with _access(config, tenant) as (store, loaded):
        user, password = store.rotate(tenant, name)
        typer.echo(f"username: {user.username}\npassword: {password}")
        _apply(store, loaded)
