"""`edge point write`: one write through the running gateway, as any local system would send it over MQTT."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from edge.bus.topics import Topics
from edge.cli.common import load_or_exit
from edge.cli.mqtt_request import new_request_id, request
from edge.cli.pointlist_cmd import export_points, import_points
from edge.config.suggest import listing

app = typer.Typer(
    no_args_is_help=True,
    help="Write points through the running gateway; import and export point lists (CSV, BACnet EDE).",
)
CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")

_NEGATIVE_NUMBER = re.compile(r"-(\d|\.\d|inf|infinity|nan)", re.IGNORECASE)


class _NegativeNumbersAreValues(TyperCommand):
    """`edge point write boiler setpoint -1`: a negative number is a value, not an option, without `--`.

    click reads any word starting with '-' as an option; a leading space makes the number a plain word, and
    JSON (the value's syntax) ignores it. Misspelled options still fail as unknown options."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # Any: newer typer vendors its own click
        words = [f" {a}" if _NEGATIVE_NUMBER.match(a) else a for a in args]
        return super().parse_args(ctx, words)


@app.command("write", cls=_NegativeNumbersAreValues)
def write(
    device: str = typer.Argument(..., help="Device name."),
    point: str = typer.Argument(..., help="Point name."),
    value: str = typer.Argument(
        ..., help='JSON value: 21.5, -1, true, "text", or null to release the point.'
    ),
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
        known = listing(device, (d.name for d in loaded.devices))
        typer.echo(f"no device named {device!r} in {config} (devices: {known})", err=True)
        raise typer.Exit(1)
    if point not in {p.name for p in spec.points}:
        known = listing(point, (p.name for p in spec.points))
        typer.echo(f"no point named {point!r} on device {device!r} (points: {known})", err=True)
        raise typer.Exit(1)
    topics = Topics(loaded.config.bus.topic_prefix)
    request_id = new_request_id()
    result = request(
        loaded,
        publish_topic=topics.command(spec.tenant, spec.site, device, point),
        answer_topics=[topics.command_result(spec.tenant, spec.site, device, point)],
        # json, not orjson: NaN, Infinity and integers beyond 64 bits go to the gateway as typed, and it refuses
        # them naming the point's range (orjson would send NaN as null: a release).
        payload=json.dumps(_request_body(_parse_value(value), request_id, priority)).encode(),
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
    note = result.get("reason")  # the device took it, with a remark (a BACnet error after applying it)
    typer.echo(
        f"{device}.{point} = {json.dumps(result.get('value'))}: written" + (f"; {note}" if note else "")
    )


_NON_FINITE = {"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan"}


def _request_body(value: Any, request_id: str, priority: int | None) -> dict[str, Any]:
    body = {"value": value, "id": request_id}
    return body if priority is None else {**body, "priority": priority}


def _parse_value(raw: str) -> Any:
    """The JSON value, or a non-finite number as Python spells it (for the gateway to refuse), or text."""
    text = raw.strip()  # undoes the space _NegativeNumbersAreValues may add
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return float(text) if text.lower() in _NON_FINITE else text


app.command("import")(import_points)
app.command("export")(export_points)
