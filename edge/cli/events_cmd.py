from __future__ import annotations

import json
from pathlib import Path

import typer

from edge.cli.output import JSON_OPTION, Column, emit
from edge.sdk.events import DATA_VERSIONS, json_schemas

app = typer.Typer(no_args_is_help=True, help="Event types and their data schemas.")


@app.command("types")
def types(as_json: bool = JSON_OPTION) -> None:
    """List the event types the kernel emits, with their data version."""
    rows = [{"type": event_type, "dataversion": version} for event_type, version in DATA_VERSIONS.items()]
    emit(rows, [Column("type", "type"), Column("dataversion", "dataversion")], as_json=as_json)


@app.command("schema")
def schema(
    out: Path = typer.Option(None, help="Write one <type>.schema.json per event type into this folder."),
) -> None:
    """Print (or write) the JSON Schema of every event type's data."""
    schemas = json_schemas()
    if out is None:
        typer.echo(json.dumps(schemas, indent=2))
        return
    out.mkdir(parents=True, exist_ok=True)
    for event_type, body in schemas.items():
        (out / f"{event_type}.schema.json").write_text(json.dumps(body, indent=2) + "\n")
    typer.echo(f"wrote {len(schemas)} schemas to {out}")
