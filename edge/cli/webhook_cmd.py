"""`edge webhook`: a tenant's webhook subscriptions, a thin face over `edge.webhooks.WebhookStore`.

Works whether the gateway runs or not: subscriptions live in the gateway's SQLite file, and a running
gateway picks up changes within `[webhooks] reload_interval` (1 s by default).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import typer

from edge.cli.common import load_or_exit
from edge.cli.output import JSON_OPTION, emit_json
from edge.sdk.tenancy import tenant_scope
from edge.webhooks import Subscription, SubscriptionNotFound, WebhookStore, open_store

app = typer.Typer(no_args_is_help=True, help="Webhook subscriptions: signed CloudEvents to HTTP endpoints.")

EXIT_USAGE = 2
EXIT_NOT_FOUND = 3

_CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")
_TENANT = typer.Option(..., "--tenant", "-t", help="The tenant the subscription belongs to.")


@contextmanager
def _store(config: Path, tenant: str) -> Iterator[WebhookStore]:
    loaded, _ = load_or_exit(config)
    contexts = loaded.tenant_contexts()
    if tenant not in contexts:
        typer.echo(f"unknown tenant {tenant!r} (known: {', '.join(sorted(contexts))})", err=True)
        raise typer.Exit(EXIT_USAGE)
    with open_store(loaded) as store, tenant_scope(contexts[tenant]):
        try:
            yield store
        except SubscriptionNotFound as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(EXIT_NOT_FOUND) from None
        except ValueError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(EXIT_USAGE) from None


def _describe(sub: Subscription) -> str:
    filters = [
        f"{name}={','.join(values)}"
        for name, values in (
            ("types", sub.types),
            ("sites", sub.sites),
            ("devices", sub.devices),
            ("points", sub.points),
        )
        if values
    ]
    state = sub.state if sub.state_reason is None else f"{sub.state} ({sub.state_reason})"
    return f"{sub.id}  {sub.url}  {state}  {' '.join(filters) or 'all events'}"


@app.command("add")
def add(
    url: str = typer.Argument(..., help="Where to POST the events (http or https)."),
    tenant: str = _TENANT,
    types: list[str] = typer.Option([], "--type", help="Only this event type (repeatable; default all)."),
    sites: list[str] = typer.Option([], "--site", help="Only events of this site (repeatable)."),
    devices: list[str] = typer.Option([], "--device", help="Only events of this device (repeatable)."),
    points: list[str] = typer.Option(
        [], "--point", help="Only events about this point; telemetry is narrowed to these points."
    ),
    paused: bool = typer.Option(False, "--paused", help="Create it paused (events accumulate for it)."),
    config: Path = _CONFIG,
) -> None:
    """Subscribe URL to the tenant's events; prints the signing secret, which is not shown again."""
    with _store(config, tenant) as store:
        created = store.add(url, types=types, sites=sites, devices=devices, points=points, paused=paused)
    typer.echo(_describe(created.subscription))
    typer.echo(f"secret: {created.secret}")
    typer.echo("keep the secret: the receiver verifies webhook-signature with it; it is not shown again")


@app.command("list")
def list_(
    tenant: str = _TENANT,
    as_json: bool = JSON_OPTION,
    config: Path = _CONFIG,
) -> None:
    """The tenant's subscriptions, without their secrets."""
    with _store(config, tenant) as store:
        subs = store.list()
    if as_json:
        emit_json(
            [orjson.loads(orjson.dumps({f: getattr(s, f) for f in Subscription.__slots__})) for s in subs]
        )
        return
    if not subs:
        typer.echo(f"tenant {tenant} has no webhook subscriptions")
    for sub in subs:
        typer.echo(_describe(sub))


@app.command("remove")
def remove(
    subscription: str = typer.Argument(..., help="Subscription id (wh_...)."),
    tenant: str = _TENANT,
    config: Path = _CONFIG,
) -> None:
    """Delete a subscription, with its undelivered backlog and dead letters."""
    with _store(config, tenant) as store:
        store.remove(subscription)
    typer.echo(f"removed {subscription}")


@app.command("pause")
def pause(subscription: str = typer.Argument(...), tenant: str = _TENANT, config: Path = _CONFIG) -> None:
    """Stop deliveries; the tenant's events accumulate for the subscription (within the retention limits)."""
    with _store(config, tenant) as store:
        typer.echo(_describe(store.set_state(subscription, "paused", "paused by an operator")))


@app.command("resume")
def resume(subscription: str = typer.Argument(...), tenant: str = _TENANT, config: Path = _CONFIG) -> None:
    """Deliver again, starting with what accumulated while paused."""
    with _store(config, tenant) as store:
        typer.echo(_describe(store.set_state(subscription, "active")))


@app.command("rotate-secret")
def rotate_secret(
    subscription: str = typer.Argument(...),
    tenant: str = _TENANT,
    grace: float = typer.Option(
        86_400.0, "--grace", min=0.0, help="Seconds the old secret keeps signing beside the new one."
    ),
    config: Path = _CONFIG,
) -> None:
    """A new signing secret, printed once; deliveries carry both signatures during the grace period."""
    with _store(config, tenant) as store:
        created = store.rotate_secret(subscription, grace)
    typer.echo(f"secret: {created.secret}")
    typer.echo(
        f"the old secret keeps signing too for {grace:g} s: switch the receiver to the new one meanwhile"
    )


@app.command("dead-letters")
def dead_letters(
    subscription: str = typer.Argument(...),
    tenant: str = _TENANT,
    limit: int = typer.Option(50, "--limit", min=1),
    as_json: bool = JSON_OPTION,
    config: Path = _CONFIG,
) -> None:
    """Events the subscription gave up on, with the reason of the last attempt."""
    with _store(config, tenant) as store:
        letters = store.dead_letters(subscription, limit)
    if as_json:
        fields = ("event_id", "type", "subject", "dead_at", "attempts", "replay", "reason")
        emit_json([{f: getattr(d, f) for f in fields} for d in letters])
        return
    if not letters:
        typer.echo(f"{subscription} has no dead letters")
    now = time.time()
    for d in letters:
        replay = " (replay requested)" if d.replay else ""
        typer.echo(
            f"{d.event_id}  {d.type}  {d.subject}  {now - d.dead_at:.0f} s ago, {d.attempts}x{replay}: {d.reason}"
        )


@app.command("replay")
def replay(subscription: str = typer.Argument(...), tenant: str = _TENANT, config: Path = _CONFIG) -> None:
    """Offer the dead letters again, with their original webhook-id (after the receiver was fixed)."""
    with _store(config, tenant) as store:
        count = store.replay(subscription)
    typer.echo(
        f"{count} dead letters of {subscription} marked for replay; a running gateway sends them within seconds"
    )
