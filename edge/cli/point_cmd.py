from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import typer

from edge.bus.topics import Topics
from edge.cli.common import load_or_exit
from edge.cli.mqtt_request import new_request_id, request

app = typer.Typer(no_args_is_help=True, help="Read and write points through the running gateway.")
CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")


@app.command("write")
def write(
    device: str = typer.Argument(..., help="Device name."),
    point: str = typer.Argument(..., help="Point name."),
    value: str = typer.Argument(..., help='JSON value: 21.5, true, "text", or null to release the point.'),
    config: Path = CONFIG,
    timeout: float = typer.Option(15.0, help="Seconds to wait for the gateway's answer."),
    priority: int | None = typer.Option(
        None, min=1, max=16, help="BACnet write priority 1..16 for this write (default: the point's own)."
    ),
) -> None:
    """Ask the running gateway to write a point (same path and checks as an MQTT write request)."""
    loaded, _ = load_or_exit(config)
    spec = loaded.device(device)
    if spec is None:
        typer.echo(f"no device named {device!r} in {config}", err=True)
        raise typer.Exit(1)
    topics = Topics(loaded.config.bus.topic_prefix)
    request_id = new_request_id()
    result = request(
        loaded,
        publish_topic=topics.command(spec.tenant, spec.site, device, point),
        answer_topics=[topics.command_result(spec.tenant, spec.site, device, point)],
        payload=orjson.dumps(_request_body(_parse_value(value), request_id, priority)),
        request_id=request_id,
        timeout=timeout,
    )
    if result is None:
        typer.echo(
            f"no answer from the gateway within {timeout:g} s (is it running on this configuration?)",
            err=True,
        )
        raise typer.Exit(2)
    if not result.get("ok"):
        typer.echo(f"refused: {result.get('reason')}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{device}.{point} = {json.dumps(result.get('value'))}: written")


def _request_body(value: Any, request_id: str, priority: int | None) -> dict[str, Any]:
    body = {"value": value, "id": request_id}
    return body if priority is None else {**body, "priority": priority}


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw  # plain text
