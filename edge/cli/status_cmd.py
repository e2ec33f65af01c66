"""`edge status`: the running gateway's health as a table, from the status file it rewrites every two seconds.

Exit codes (for scripts and monitoring):
  0  ok: live, ready, every device and module healthy
  1  degraded: ready, but a device is down or a module reports a problem
  2  the configuration is invalid
  3  not ready: running, but events cannot flow (the broker is unreachable)
  4  not live: no gateway runs on this data directory, its status file is stale, its event loop is stuck
     or its storage refuses writes
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import orjson
import typer

from edge.bus.listeners import broker_listeners
from edge.bus.tls import certificate_expiry
from edge.cli.common import load_or_exit
from edge.config import LoadedConfig
from edge.downlink.ledger import EntitlementAnswer, read_entitlement_answers
from edge.ops.health import HealthReport
from edge.ops.status import status_file

EXIT_OK, EXIT_DEGRADED, EXIT_NOT_READY, EXIT_NOT_LIVE = 0, 1, 3, 4
STALE_AFTER = 10.0  # seconds; the gateway rewrites the file every STATUS_INTERVAL (2 s)


def status(
    config: Path = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file."),
    as_json: bool = typer.Option(False, "--json", help="Print the status file's health as JSON."),
    instance: str | None = typer.Option(
        None, "--instance", envvar="EDGE_INSTANCE", help="Cluster mode: the instance whose status to show."
    ),
) -> None:
    """Show liveness, readiness and each check of the running gateway; the exit code says the state."""
    loaded, _ = load_or_exit(config, secrets=False)
    if instance is not None:
        loaded = dataclasses.replace(loaded, instance=instance)
    path = status_file(loaded.data_dir)
    body, problem = _read(path)
    answers = read_entitlement_answers(loaded.data_dir)
    if body is None:
        typer.echo(f"not live: {problem}")
        _print_entitlements(answers)  # what the gateway will start on: the last answers hold
        raise typer.Exit(EXIT_NOT_LIVE)
    age = time.time() - float(body.get("time", 0))
    report = HealthReport.from_dict(body.get("health", {}))
    stale = age > STALE_AFTER or not _alive(int(body.get("pid", 0)))
    certificates = _certificates(loaded)
    if as_json:
        platform = {
            t: {"entitlements": list(a.flags), "age_s": round(a.age(), 1)} for t, a in answers.items()
        }
        health = body.get("health", {})
        downlink = body.get("downlink", {})
        document = {
            "age": round(age, 1),
            "stale": stale,
            **health,
            "platform": platform,
            "downlink": downlink,
            "certificates": certificates,
        }
        typer.echo(orjson.dumps(document).decode())
    else:
        _print_table(body, report, age, stale)
        for tenant, link in sorted(body.get("downlink", {}).items()):
            typer.echo(_downlink_line(tenant, link))
        _print_entitlements(answers)
        for row in certificates:
            typer.echo(_certificate_line(row))
    if stale or not report.live:
        raise typer.Exit(EXIT_NOT_LIVE)
    if not report.ready:
        raise typer.Exit(EXIT_NOT_READY)
    raise typer.Exit(EXIT_DEGRADED if report.degraded else EXIT_OK)


def _certificates(loaded: LoadedConfig) -> list[dict[str, Any]]:
    """Expiry of each TLS listener's server certificate (`[[bus.listeners]]`), read from its file."""
    bus = loaded.config.bus
    if bus.mode != "embedded":
        return []
    rows: list[dict[str, Any]] = []
    for listener in broker_listeners(bus, loaded.path.parent, loaded.data_dir):
        if listener.certfile is None:
            continue
        row: dict[str, Any] = {"listener": listener.name, "file": str(listener.certfile)}
        try:
            expiry = certificate_expiry(listener.certfile)
        except (OSError, ValueError) as exc:
            row["error"] = str(exc)
        else:
            row |= {"not_after": expiry.not_after.isoformat(), "days_left": expiry.days_left}
            row["warning"] = expiry.warning
        rows.append(row)
    return rows


def _certificate_line(row: dict[str, Any]) -> str:
    where = f"certificate of listener {row['listener']} ({row['file']})"
    if "error" in row:
        return f"WARNING {where}: cannot read it: {row['error']}"
    days = row["days_left"]
    text = f"{where}: expires {row['not_after'][:10]}, {days} days left"
    if days < 0:
        return f"WARNING {text.replace(f'{days} days left', 'EXPIRED')}: renew it with `edge certs create --profile broker --force`"
    if row["warning"]:
        return f"WARNING {text}: renew it with `edge certs create --profile broker --force`"
    return text


def _print_entitlements(answers: dict[str, EntitlementAnswer]) -> None:
    """The entitlement service's last answer per tenant (edge.downlink), with its age."""
    for tenant, answer in sorted(answers.items()):
        flags = ", ".join(answer.flags) or "none"
        typer.echo(f"entitlements of {tenant} from its platform: {flags} (answer {answer.age():.0f} s old)")


def _downlink_line(tenant: str, link: dict[str, Any]) -> str:
    """`downlink of acme: connected since 12:00:03 UTC, last message m-7 (40 s ago)`, or retrying with why."""
    now = time.time()
    since = link.get("since")
    when = f" since {time.strftime('%H:%M:%S UTC', time.gmtime(since))}" if since else ""
    line = f"downlink of {tenant}: {link.get('state')}{when}"
    if link.get("state") == "retrying":
        line += f" ({link.get('failures')} failed attempts; last error: {link.get('last_error')})"
    message, at = link.get("last_message"), link.get("last_message_at")
    line += f", last message {message} ({now - at:.0f} s ago)" if message and at else ", no message yet"
    return line


def _read(path: Path) -> tuple[dict[str, Any] | None, str]:
    try:
        body = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None, f"no status file {path}: the gateway is not running on this data directory"
    except (OSError, orjson.JSONDecodeError) as exc:
        return None, f"cannot read {path}: {exc}"
    if not isinstance(body, dict) or "health" not in body:
        return None, f"{path} has no health section (written by an older gateway?)"
    return body, ""


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # runs as the service user: it exists
        return True
    return True


def _print_table(body: dict[str, Any], report: HealthReport, age: float, stale: bool) -> None:
    state = "not live (status file is stale: the gateway stopped or hangs)" if stale else report.state
    typer.echo(f"gateway pid {body.get('pid')}: {state}; status written {age:.1f} s ago")
    typer.echo(
        f"uptime {float(body.get('uptime', 0)):.0f} s, devices up {body.get('devices_up')}/{body.get('devices')},"
        f" backlog {body.get('backlog')}, log level {body.get('log_level', '?')},"
        f" event loop {body.get('event_loop', '?')}"
    )
    rows = [(c.name, "ok" if c.ok else "FAIL", c.scope, c.detail) for c in report.checks]
    widths = [max(len(r[i]) for r in [("CHECK", "STATE", "AFFECTS", ""), *rows]) for i in range(3)]
    typer.echo(f"{'CHECK':<{widths[0]}}  {'STATE':<{widths[1]}}  {'AFFECTS':<{widths[2]}}  DETAIL")
    for name, ok, scope, detail in rows:
        typer.echo(f"{name:<{widths[0]}}  {ok:<{widths[1]}}  {scope:<{widths[2]}}  {detail}")
    _print_limits(body.get("limits") or {})


def _print_limits(limits: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Per tenant: its storage quota's use, and each limit that acted (slowed or refused), with its counts."""
    if not limits:
        return
    rows = [("TENANT", "LIMIT", "POLICY", "SETTING", "ACTED", "UNITS", "WAITED")]
    for tenant, own in sorted(limits.items()):
        storage = own.get("storage", {})
        used, quota = int(storage.get("used", 0)), int(storage.get("limit", 0))
        share = f"{used / quota:.0%}" if quota else "-"
        rows.append(
            (tenant, "storage", str(storage.get("policy", "-")), f"{quota} B", share, f"{used} B", "-")
        )
        for name, c in sorted(own.items()):
            if name == "storage" or not c.get("acted"):
                continue
            rows.append(
                (
                    tenant,
                    name,
                    str(c["policy"]),
                    f"{c['limit']:g}",
                    str(c["acted"]),
                    f"{c['units']:g}",
                    f"{c['waited_s']:.1f} s",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    typer.echo("per-tenant limits (those that acted; storage: share of the quota used):")
    for row in rows:
        typer.echo("  ".join(f"{cell:<{widths[i]}}" for i, cell in enumerate(row)).rstrip())
