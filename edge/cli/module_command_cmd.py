"""`edge module command` (mounted by module_cmd): send a command to a module of the running gateway over MQTT and print its answer.

The request goes where any local system would send it (`{prefix}/{tenant}/cmd/module/{module}/{action}`);
the answer is the kernel's refusal (`.../result`) or the module's `org.edgegw.module.command.result` event
(`{prefix}/{tenant}/events/module/{module}`), matched by request id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import typer

from edge.bus.topics import Topics
from edge.cli.common import load_or_exit
from edge.cli.mqtt_request import new_request_id, request
from edge.cli.options import parse_pairs
from edge.config import LoadedConfig
from edge.sdk.events import MODULE_COMMAND_RESULT

CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")
EXIT_REFUSED, EXIT_NO_ANSWER = 1, 2


def command(
    module: str = typer.Argument(..., help="Module name, e.g. alarms."),
    action: str = typer.Argument(..., help="Action, e.g. ack."),
    args: list[str] | None = typer.Argument(None, help="Arguments as key=value."),
    tenant: str = typer.Option(..., "--tenant", "-t", help="Tenant the command is for."),
    config: Path = CONFIG,
    timeout: float = typer.Option(15.0, help="Seconds to wait for the answer."),
) -> None:
    """Send a command to a module and print its result as JSON."""
    loaded, _ = load_or_exit(config)
    result = send(loaded, tenant, module, action, parse_pairs(args, "ARGS"), timeout)
    typer.echo(json.dumps(result.get("result", {}), indent=2, sort_keys=True))


def send(
    loaded: LoadedConfig, tenant: str, module: str, action: str, args: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """Send one command and return the successful result's data; exits with a message otherwise."""
    if tenant not in {t.id for t in loaded.config.tenants}:
        typer.echo(f"no tenant {tenant!r} in the configuration", err=True)
        raise typer.Exit(EXIT_REFUSED)
    topics = Topics(loaded.config.bus.topic_prefix)
    request_id = new_request_id()
    answer = request(
        loaded,
        publish_topic=topics.module_command(tenant, module, action),
        answer_topics=[
            topics.module_command_result(tenant, module, action),
            topics.module_events(tenant, module),
        ],
        payload=orjson.dumps({"args": args, "id": request_id}),
        request_id=request_id,
        timeout=timeout,
        event_type=MODULE_COMMAND_RESULT,
    )
    if answer is None:
        typer.echo(
            f"no answer from the gateway within {timeout:g} s (is it running, with module {module} enabled?)",
            err=True,
        )
        raise typer.Exit(EXIT_NO_ANSWER)
    if not answer.get("ok"):
        typer.echo(f"refused: {answer.get('reason')}", err=True)
        raise typer.Exit(EXIT_REFUSED)
    return answer
