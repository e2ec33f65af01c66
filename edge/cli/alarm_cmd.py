"""`edge alarm ack|list`: acknowledge and list the alarms module's alarms through the running gateway."""

from __future__ import annotations

from pathlib import Path

import typer

from edge.cli.common import load_or_exit
from edge.cli.module_command_cmd import send

app = typer.Typer(no_args_is_help=True, help="Alarms of the alarms module (through the running gateway).")
CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")
TENANT = typer.Option(..., "--tenant", "-t", help="Tenant whose alarm it is.")


@app.command("ack")
def ack(
    alarm_id: str = typer.Argument(..., help="The alarm id, '<rule>:<site>/<device>:<condition>'."),
    tenant: str = TENANT,
    by: str = typer.Option("", help="Who acknowledges (recorded with the alarm)."),
    note: str = typer.Option("", help="A note recorded with the acknowledgement."),
    config: Path = CONFIG,
    timeout: float = typer.Option(15.0, help="Seconds to wait for the answer."),
) -> None:
    """Acknowledge an alarm; prints its state afterwards."""
    loaded, _ = load_or_exit(config)
    args = {"alarm_id": alarm_id, **({"by": by} if by else {}), **({"note": note} if note else {})}
    alarm = send(loaded, tenant, "alarms", "ack", args, timeout).get("result", {})
    state = alarm.get("state", "?")
    typer.echo(
        f"{alarm_id}: acknowledged ({state}, {alarm.get('severity', '?')}: value {alarm.get('value')})"
    )


@app.command("list")
def list_alarms(
    tenant: str = TENANT,
    config: Path = CONFIG,
    timeout: float = typer.Option(15.0, help="Seconds to wait for the answer."),
) -> None:
    """The tenant's unresolved alarms: active, or cleared and not yet acknowledged."""
    loaded, _ = load_or_exit(config)
    result = send(loaded, tenant, "alarms", "list", {}, timeout).get("result", {})
    alarms = result.get("alarms", [])
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
