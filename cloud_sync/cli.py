"""`edge sync`: the state of store-and-forward uplinks (cloud sync), read from the outbox.

A thin face over the outbox's inspection (`edge.sdk.cli.open_outbox`): `status` opens the outbox read-only (it
works while the gateway runs, or after it stopped); `flush` (read-only too) waits until the running gateway
has uploaded what was buffered when it started; `replay-dead-letters` marks a tenant's dead letters so that
their consumer offers them again (within seconds if the gateway runs, else at its next start).

Mounted by the kernel's CLI through the `edge.cli` entry point `sync` (see edge.sdk.cli).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import typer

from edge.sdk import TenantContext, tenant_scope
from edge.sdk.cli import (
    CONFIG_OPTION,
    ConfiguredGateway,
    OutboxInspector,
    fail,
    open_gateway_config,
    open_outbox,
    summary_row,
    uplink_status,
)

app = typer.Typer(no_args_is_help=True, help="Store-and-forward uplinks: backlog, dead letters, replay.")

EXIT_FLUSH_TIMEOUT = 1
EXIT_USAGE = 2
EXIT_NO_OUTBOX = 3
CLOUD_MODULE = "cloud_sync"
CLOUD_CONSUMER = "module:cloud_sync:uplink"


def _open(gateway: ConfiguredGateway, writable: bool = False) -> OutboxInspector:
    try:
        return open_outbox(gateway, writable=writable)
    except FileNotFoundError:
        fail(f"no outbox at {gateway.outbox_path} (has the gateway run yet?)", EXIT_NO_OUTBOX)
    except ConnectionError as exc:  # the PostgreSQL outbox ([storage] backend) is out of reach
        fail(str(exc), EXIT_NO_OUTBOX)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _failing_now(row: dict[str, Any]) -> bool:
    """The last attempt failed: a failure more recent than the last success."""
    failed, ok = row["last_failure_age_s"], row["last_success_age_s"]
    return failed is not None and (ok is None or failed < ok)


@app.command("status")
def status(
    config: Path = CONFIG_OPTION,
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant."),
    consumer: str | None = typer.Option(
        None, "--consumer", help="Only this consumer (default: every uplink that reports status)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line instead of a table."),
) -> None:
    """Per tenant and uplink: backlog, age of the oldest pending event, last success, dead letters, drops."""
    gateway = open_gateway_config(config)
    inspector = _open(gateway)
    now = time.time()
    with inspector:
        rows = uplink_status(inspector, gateway.tenants, tenant=tenant, consumer=consumer, now=now)
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


def _cloud_tenants(gateway: ConfiguredGateway, config: Path, only: str | None) -> list[str]:
    """Tenants of the gateway that cloud_sync uploads (configured under the enabled module's `tenants`)."""
    settings = gateway.module_config(CLOUD_MODULE)
    if settings is None:
        fail(f"no enabled {CLOUD_MODULE} module in {config}: nothing is uploaded to a cloud", EXIT_USAGE)
    configured = settings.get("tenants")
    gateway_tenants = set(gateway.tenants)
    chosen = sorted(gateway_tenants & set(configured if isinstance(configured, dict) else ()))
    if only is not None:
        if only not in chosen:
            fail(f"tenant {only!r} has no cloud uplink (uploaded: {', '.join(chosen) or 'none'})", EXIT_USAGE)
        chosen = [only]
    if not chosen:
        fail(f"no tenant of the gateway has a cloud uplink in {config}", EXIT_USAGE)
    return chosen


def _gateway_running(gateway: ConfiguredGateway, now: float) -> bool:
    """A gateway rewrote its status file within the last few seconds."""
    try:
        return now - gateway.status_file.stat().st_mtime < 5.0
    except OSError:
        return False


@app.command("flush")
def flush(
    config: Path = CONFIG_OPTION,
    timeout: float = typer.Option(300.0, "--timeout", min=0.0, help="Give up after this many seconds."),
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant."),
    interval: float = typer.Option(1.0, "--interval", min=0.05, help="Seconds between progress lines."),
) -> None:
    """Wait until the running gateway has uploaded, to every tenant's cloud, what is buffered now.

    Read-only: the gateway does the uploading. Exit 0 once the cloud backlog that existed at the start is
    delivered (events stored later are not waited for); exit 1 after --timeout, with what remains per tenant
    and the last upload error.
    """
    gateway = open_gateway_config(config)
    tenants = _cloud_tenants(gateway, config, tenant)
    contexts = gateway.tenants
    inspector = _open(gateway)
    started = time.monotonic()
    with inspector:
        targets: dict[str, int] = {}
        dead_at_start: dict[str, int] = {}
        for tenant_id in tenants:
            with tenant_scope(contexts[tenant_id]):
                targets[tenant_id] = inspector.last_position()
                dead_at_start[tenant_id] = inspector.summary(CLOUD_CONSUMER).dead_letters

        def progress() -> dict[str, int]:
            left = {}
            for tenant_id in tenants:
                with tenant_scope(contexts[tenant_id]):
                    left[tenant_id] = inspector.remaining(CLOUD_CONSUMER, targets[tenant_id])[0]
            return left

        left = progress()
        total = sum(left.values())
        typer.echo(
            f"flushing {total} events to the cloud: "
            + ", ".join(f"{t} {n}" for t, n in left.items())
            + f" (timeout {timeout:g} s)"
        )
        if total and not _gateway_running(gateway, time.time()):
            typer.echo(
                f"warning: no running gateway updates {gateway.status_file}; "
                "nothing is uploaded until it runs",
                err=True,
            )
        while sum(left.values()) > 0:
            elapsed = time.monotonic() - started
            if elapsed >= timeout:
                break
            time.sleep(min(interval, max(0.0, timeout - elapsed)))
            left = progress()
            elapsed = time.monotonic() - started
            errors = _current_errors(inspector, contexts, tenants)
            typer.echo(
                f"[{elapsed:5.0f} s] "
                + ", ".join(
                    f"{t} {n} left" + (f" (failing: {errors[t]})" if errors.get(t) else "")
                    for t, n in left.items()
                )
            )
        elapsed = time.monotonic() - started
        new_dead = {}
        for tenant_id in tenants:
            with tenant_scope(contexts[tenant_id]):
                summary = inspector.summary(CLOUD_CONSUMER)
            if summary.dead_letters > dead_at_start[tenant_id]:
                new_dead[tenant_id] = summary.dead_letters - dead_at_start[tenant_id]
        dead_note = "".join(
            f"; {n} of {t}'s events became dead letters (edge sync status)" for t, n in new_dead.items()
        )
        if sum(left.values()) == 0:
            typer.echo(f"flushed: {total} events delivered in {elapsed:.1f} s{dead_note}")
            return
        typer.echo(
            f"timed out after {elapsed:.0f} s with {sum(left.values())} events not yet uploaded{dead_note}:"
        )
        now = time.time()
        for tenant_id in tenants:
            with tenant_scope(contexts[tenant_id]):
                summary = inspector.summary(CLOUD_CONSUMER)
            row = summary_row(tenant_id, summary, now)
            error = row["last_error"] or "none recorded"
            when = "" if row["last_failure_age_s"] is None else f", {_ago(row['last_failure_age_s'])}"
            state = "failing" if _failing_now(row) else "last success " + _ago(row["last_success_age_s"])
            typer.echo(f"  {tenant_id}: {left[tenant_id]} left ({state}); last error{when}: {error}")
    raise typer.Exit(EXIT_FLUSH_TIMEOUT)


def _current_errors(
    inspector: OutboxInspector, contexts: dict[str, TenantContext], tenants: list[str]
) -> dict[str, str]:
    """Tenant -> last error, for tenants whose last upload attempt failed."""
    now = time.time()
    errors = {}
    for tenant_id in tenants:
        with tenant_scope(contexts[tenant_id]):
            row = summary_row(tenant_id, inspector.summary(CLOUD_CONSUMER), now)
        if _failing_now(row):
            errors[tenant_id] = str(row["last_error"])
    return errors


@app.command("replay-dead-letters")
def replay_dead_letters(
    tenant: str = typer.Option(..., "--tenant", help="Tenant whose dead letters are offered again."),
    config: Path = CONFIG_OPTION,
    consumer: str | None = typer.Option(None, "--consumer", help="Only this consumer's dead letters."),
) -> None:
    """Offer a tenant's dead letters to their consumer again (after the receiver was fixed)."""
    gateway = open_gateway_config(config)
    inspector = _open(gateway, writable=True)
    ctx = gateway.tenants.get(tenant)
    if ctx is None:
        inspector.close()
        fail(f"unknown tenant {tenant!r} (known: {', '.join(sorted(gateway.tenants))})", EXIT_USAGE)
    with inspector, tenant_scope(ctx):
        count = inspector.request_replay(consumer)
    typer.echo(
        f"{count} dead letters of {tenant} marked for replay; the running gateway offers them within seconds"
    )
