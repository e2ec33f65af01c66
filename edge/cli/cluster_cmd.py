"""`edge cluster status|drain|undrain`: members, device ownership and tenant leaders, read from PostgreSQL.

edge.cluster.status (psycopg) is imported in the commands: every `edge` command, `edge run` among them, loads
this module to build the command tree."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from edge.cli.common import load_or_exit
from edge.cli.output import JSON_OPTION, Column, emit
from edge.config.models import ClusterConfig

if TYPE_CHECKING:
    from edge.cluster.status import ClusterStatus

app = typer.Typer(no_args_is_help=True, help="Cluster mode: members, device leases and tenant leaders.")

CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")
EXIT_UNREACHABLE = 3
T = TypeVar("T")


def _cluster(config: Path) -> tuple[ClusterConfig, str, tuple[str, str | None]]:
    loaded, _ = load_or_exit(config)
    if not loaded.config.cluster.enabled:
        typer.echo("cluster mode is off in this configuration ([cluster] enabled = false)", err=True)
        raise typer.Exit(2)
    return loaded.config.cluster, loaded.config.gateway.id, loaded.config.cluster_database()


def _ask(work: Coroutine[Any, Any, T]) -> T:
    import psycopg

    try:
        return asyncio.run(work)
    except (OSError, psycopg.Error, TimeoutError) as exc:
        typer.echo(f"PostgreSQL is unreachable: {exc}", err=True)
        raise typer.Exit(EXIT_UNREACHABLE) from None


@app.command("status")
def status(config: Path = CONFIG, as_json: bool = JSON_OPTION) -> None:
    """Members (alive, draining), how many devices each owns, and which instance leads each tenant."""
    from edge.cluster.status import cluster_status

    _, name, database = _cluster(config)
    state: ClusterStatus = _ask(cluster_status(*database, name))
    now = datetime.now(UTC)
    members = [
        {
            "instance": m.instance,
            "state": "draining" if m.draining and m.alive else ("alive" if m.alive else "gone"),
            "host": m.host,
            "pid": m.pid,
            "devices": len(state.owned_by(m.instance)),
            "leads": [r.name for r in state.leaders if r.owner == m.instance and not r.expired],
            "heartbeat_age_s": round((now - m.heartbeat_at).total_seconds(), 1),
        }
        for m in state.members
    ]
    devices = [
        {
            "device": r.name,
            "owner": None if r.expired else r.owner,
            "epoch": r.epoch,
            "sequence": r.sequence,
        }
        for r in state.devices
    ]
    if as_json:
        leaders = {r.name: (None if r.expired else r.owner) for r in state.leaders}
        emit([{"members": members, "devices": devices, "leaders": leaders}], [], as_json=True)
        return
    emit(
        members,
        [
            Column("instance", "instance"),
            Column("state", "state"),
            Column("host", "host"),
            Column("pid", "pid"),
            Column("devices", "devices"),
            Column("leads", "leads tenants"),
            Column("heartbeat_age_s", "heartbeat (s ago)"),
        ],
        as_json=False,
        title=f"cluster {name}",
    )
    emit(
        devices,
        [
            Column("device", "device"),
            Column("owner", "owner"),
            Column("epoch", "epoch"),
            Column("sequence", "sequence"),
        ],
        as_json=False,
    )


@app.command("drain")
def drain(
    instance: str = typer.Argument(..., help="The instance whose devices should move to the others."),
    config: Path = CONFIG,
) -> None:
    """Move an instance's devices and leaderships to the others (before stopping it for an upgrade)."""
    from edge.cluster.status import set_draining

    cluster, name, database = _cluster(config)
    if not _ask(set_draining(*database, name, instance, True)):
        typer.echo(f"no member {instance!r} in cluster {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{instance} is draining: its devices move within {cluster.renew_interval * 2:g} s")


@app.command("undrain")
def undrain(instance: str = typer.Argument(...), config: Path = CONFIG) -> None:
    """Put a drained instance back in service (it takes its share of devices again)."""
    from edge.cluster.status import set_draining

    _, name, database = _cluster(config)
    if not _ask(set_draining(*database, name, instance, False)):
        typer.echo(f"no member {instance!r} in cluster {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{instance} is back in service")
