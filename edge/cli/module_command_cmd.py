"""`edge module command` (mounted by module_cmd): send a command to a module of the running gateway over MQTT and print its answer.

The request goes where any local system would send it (`{prefix}/{tenant}/cmd/module/{module}/{action}`);
the answer is the kernel's refusal (`.../result`) or the module's `org.edgegw.module.command.result` event
(`{prefix}/{tenant}/events/module/{module}`), matched by request id.
"""

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

from edge.cli.common import load_or_exit
from edge.cli.options import parse_pairs
from edge.config import LoadedConfig
from edge.events import MODULE_COMMAND_RESULT
from edge.topics import Topics

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
    request_id = uuid.uuid4().hex
    answer = _request(
        loaded.config.bus.host,
        loaded.config.bus.port,
        topics,
        tenant,
        module,
        action,
        orjson.dumps({"args": args, "id": request_id}),
        request_id,
        timeout,
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


def _request(
    host: str,
    port: int,
    topics: Topics,
    tenant: str,
    module: str,
    action: str,
    payload: bytes,
    request_id: str,
    timeout: float,
) -> dict[str, Any] | None:
    answered = threading.Event()
    subscribed = threading.Event()
    result: dict[str, Any] = {}

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            body = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            return
        if isinstance(body, dict) and body.get("type") == MODULE_COMMAND_RESULT:
            body = body.get("data")  # the module's answer, as a CloudEvent
        if isinstance(body, dict) and body.get("request_id") == request_id:
            result.update(body)
            answered.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"edge-cli-{request_id[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(host, port)
    client.loop_start()
    try:
        client.subscribe(
            [
                (topics.module_command_result(tenant, module, action), 1),
                (topics.module_events(tenant, module), 1),
            ]
        )
        if not subscribed.wait(timeout):
            return None
        client.publish(topics.module_command(tenant, module, action), payload, qos=1)
        return result if answered.wait(timeout) else None
    finally:
        client.loop_stop()
        client.disconnect()
