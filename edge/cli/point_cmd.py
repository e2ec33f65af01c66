from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import typer
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge.bus.access import local_login
from edge.cli.common import load_or_exit
from edge.topics import Topics

app = typer.Typer(no_args_is_help=True, help="Read and write points through the running gateway.")
CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")


@app.command("write")
def write(
    device: str = typer.Argument(..., help="Device name."),
    point: str = typer.Argument(..., help="Point name."),
    value: str = typer.Argument(..., help='JSON value: 21.5, true, "text", or null to release the point.'),
    config: Path = CONFIG,
    timeout: float = typer.Option(15.0, help="Seconds to wait for the gateway's answer."),
) -> None:
    """Ask the running gateway to write a point (same path and checks as an MQTT write request)."""
    loaded, _ = load_or_exit(config)
    spec = loaded.device(device)
    if spec is None:
        typer.echo(f"no device named {device!r} in {config}", err=True)
        raise typer.Exit(1)
    topics = Topics(loaded.config.bus.topic_prefix)
    request_id = uuid.uuid4().hex
    request = {"value": _parse_value(value), "id": request_id}
    result = _request(
        loaded.config.bus.host,
        loaded.config.bus.port,
        set_topic=topics.command(spec.tenant, spec.site, device, point),
        result_topic=topics.command_result(spec.tenant, spec.site, device, point),
        payload=orjson.dumps(request),
        request_id=request_id,
        timeout=timeout,
        login=local_login(loaded.data_dir, loaded.config.bus),
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


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw  # plain text


def _request(
    host: str,
    port: int,
    *,
    set_topic: str,
    result_topic: str,
    payload: bytes,
    request_id: str,
    timeout: float,
    login: tuple[str | None, str | None] = (None, None),
) -> dict[str, Any] | None:
    answered = threading.Event()
    subscribed = threading.Event()
    result: dict[str, Any] = {}

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            body = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            return
        if isinstance(body, dict) and body.get("request_id") == request_id:
            result.update(body)
            answered.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"edge-cli-{request_id[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if login[0] is not None:
        client.username_pw_set(*login)
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(host, port)
    client.loop_start()
    try:
        client.subscribe(result_topic, qos=1)
        if not subscribed.wait(timeout):
            return None
        client.publish(set_topic, payload, qos=1)
        return result if answered.wait(timeout) else None
    finally:
        client.loop_stop()
        client.disconnect()
