"""`edge alarm ack|list`: acknowledge and list the alarms module's alarms through the running gateway.

Mounted by the kernel's CLI through the `edge.cli` entry point `alarm` (see edge.sdk.cli)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from edge.sdk.cli import CONFIG_OPTION, open_gateway_config, send_module_command

app = typer.Typer(no_args_is_help=True, help="Alarms of the alarms module (through the running gateway).")
TENANT = typer.Option(..., "--tenant", "-t", help="Tenant whose alarm it is.")


@app.command("ack")
def ack(
    alarm_id: str = typer.Argument(..., help="The alarm id, '<rule>:<site>/<device>:<condition>'."),
    tenant: str = TENANT,
    by: str = typer.Option("", help="Who acknowledges (recorded with the alarm)."),
    note: str = typer.Option("", help="A note recorded with the acknowledgement."),
    config: Path = CONFIG_OPTION,
    timeout: float = typer.Option(15.0, help="Seconds to wait for the answer."),
) -> None:
    """Acknowledge an alarm; prints its state afterwards."""
    gateway = open_gateway_config(config)
    args = {"alarm_id": alarm_id, **({"by": by} if by else {}), **({"note": note} if note else {})}
    alarm = send_module_command(gateway, tenant, "alarms", "ack", args, timeout)
    state = alarm.get("state", "?")
    typer.echo(
        f"{alarm_id}: acknowledged ({state}, {alarm.get('severity', '?')}: value {alarm.get('value')})"
    )


@app.command("list")
def list_alarms(
    tenant: str = TENANT,
    config: Path = CONFIG_OPTION,
    timeout: float = typer.Option(15.0, help="Seconds to wait for the answer."),
    as_json: bool = typer.Option(False, "--json", help="Print the alarms as a JSON array of objects."),
) -> None:
    """The tenant's unresolved alarms: active, or cleared and not yet acknowledged."""
    gateway = open_gateway_config(config)
    result = send_module_command(gateway, tenant, "alarms", "list", {}, timeout)
    alarms = result.get("alarms", [])
    if as_json:
        typer.echo(json.dumps(alarms, indent=2, ensure_ascii=False))
        if result.get("truncated"):  # on stderr: stdout stays one JSON document
            typer.echo(f"... {result['total'] - len(alarms)} more (of {result['total']})", err=True)
        return
    if not alarms:
        typer.echo("no unresolved alarms")
        return
    for alarm in alarms:
        acked = "acknowledged" if alarm.get("acknowledged") else "unacknowledged"
        typer.echo(
            f"{alarm['alarm_id']}  {alarm['severity']:<8} {alarm['state']:<8} {acked:<14} "
            f"value {alarm.get('value')} limit {alarm.get('limit')}  since {alarm['since']}"
        )
    if result.get("truncated"):
        typer.echo(f"... {result['total'] - len(alarms)} more (of {result['total']} unresolved alarms)")
