"""`edge sync`: the state of store-and-forward uplinks (cloud sync), read from the outbox.

A thin face over `edge.storage.inspect.OutboxInspector`: `status` opens the outbox read-only (it works while
the gateway runs, or after it stopped); `replay-dead-letters` marks a tenant's dead letters so that their
consumer offers them again (within seconds if the gateway runs, else at its next start).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import typer

from edge.cli.common import load_or_exit
from edge.storage.inspect import ConsumerSummary, OutboxInspector, age
from edge.tenancy import TenantContext, tenant_scope

app = typer.Typer(no_args_is_help=True, help="Store-and-forward uplinks: backlog, dead letters, replay.")

EXIT_NO_OUTBOX = 3


def _open(config: Path, writable: bool = False) -> tuple[OutboxInspector, dict[str, TenantContext]]:
    loaded, _ = load_or_exit(config)
    path = loaded.data_dir / loaded.config.storage.path
    try:
        return OutboxInspector(path, writable=writable), loaded.tenant_contexts()
    except FileNotFoundError:
        typer.echo(f"no outbox at {path} (has the gateway run yet?)", err=True)
        raise typer.Exit(EXIT_NO_OUTBOX) from None


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _row(tenant: str, s: ConsumerSummary, now: float) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "consumer": s.status.consumer,
        "backlog": s.backlog,
        "oldest_pending_age_s": age(s.oldest_pending, now),
        "last_success_age_s": age(s.status.last_success, now),
        "last_failure_age_s": age(s.status.last_failure, now),
        "last_error": s.status.last_error,
        "delivered": s.status.delivered,
        "dead_letters": s.dead_letters,
        "dead_letters_to_replay": s.dead_letters_to_replay,
    }


def _failing_now(row: dict[str, Any]) -> bool:
    """The last attempt failed: a failure more recent than the last success."""
    failed, ok = row["last_failure_age_s"], row["last_success_age_s"]
    return failed is not None and (ok is None or failed < ok)


@app.command("status")
def status(
    config: Path = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file."),
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant."),
    consumer: str | None = typer.Option(
        None, "--consumer", help="Only this consumer (default: every uplink that reports status)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line instead of a table."),
) -> None:
    """Per tenant and uplink: backlog, age of the oldest pending event, last success, dead letters, drops."""
    inspector, tenants = _open(config)
    now = time.time()
    rows: list[dict[str, Any]] = []
    with inspector:
        for tenant_id, ctx in tenants.items():
            if tenant is not None and tenant_id != tenant:
                continue
            with tenant_scope(ctx):
                names = [consumer] if consumer else inspector.consumers()
                drops = inspector.drops()
                usage = inspector.usage()
                for name in names:
                    row = _row(tenant_id, inspector.summary(name), now)
                    row["dropped"] = {reason: n for reason, (n, _) in drops.items()}
                    row["outbox_events"], row["outbox_bytes"] = usage
                    rows.append(row)
                if not names:
                    rows.append(
                        {
                            "tenant": tenant_id,
                            "consumer": None,
                            "dropped": {r: n for r, (n, _) in drops.items()},
                        }
                    )
    if as_json:
        for row in rows:
            typer.echo(orjson.dumps(row).decode())
        return
    if not rows:
        typer.echo("no tenants")
        return
    typer.echo(
        f"{'tenant':<12} {'consumer':<26} {'backlog':>9} {'oldest':>12} {'last success':>14}"
        f" {'dead':>6} {'dropped':>8}  last error"
    )
    for row in rows:
        dropped = sum(row.get("dropped", {}).values())
        if row["consumer"] is None:
            typer.echo(
                f"{row['tenant']:<12} {'(no uplink has run)':<26} {'':>9} {'':>12} {'':>14} {'':>6} {dropped:>8}"
            )
            continue
        oldest = row["oldest_pending_age_s"]
        error = row["last_error"] if _failing_now(row) else ""
        typer.echo(
            f"{row['tenant']:<12} {row['consumer']:<26} {row['backlog']:>9} "
            f"{(f'{oldest:.0f} s' if oldest is not None else '-'):>12} {_ago(row['last_success_age_s']):>14}"
            f" {row['dead_letters']:>6} {dropped:>8}  {error or ''}"
        )


@app.command("replay-dead-letters")
def replay_dead_letters(
    tenant: str = typer.Option(..., "--tenant", help="Tenant whose dead letters are offered again."),
    config: Path = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file."),
    consumer: str | None = typer.Option(None, "--consumer", help="Only this consumer's dead letters."),
) -> None:
    """Offer a tenant's dead letters to their consumer again (after the receiver was fixed)."""
    inspector, tenants = _open(config, writable=True)
    ctx = tenants.get(tenant)
    if ctx is None:
        typer.echo(f"unknown tenant {tenant!r} (known: {', '.join(sorted(tenants))})", err=True)
        raise typer.Exit(2)
    with inspector, tenant_scope(ctx):
        count = inspector.request_replay(consumer)
    typer.echo(
        f"{count} dead letters of {tenant} marked for replay; the running gateway offers them within seconds"
    )
