from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edge.cli.common import load_or_exit, setup_logging
from edge.polling import DevicePoller

app = typer.Typer(no_args_is_help=True, help="List and test configured devices.")
CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")


@app.command("list")
def list_devices(config: Path = CONFIG) -> None:
    """Show every configured device with its driver, tenant, site, profile and point count."""
    loaded, _ = load_or_exit(config)
    table = Table("device", "driver", "tenant", "site", "profile", "points", "poll (s)")
    for d in loaded.devices:
        table.add_row(
            d.name, d.driver, d.tenant, d.site, d.profile, str(len(d.points)), f"{d.poll_interval:g}"
        )
    Console().print(table)


@app.command("test")
def test_device(name: str = typer.Argument(..., help="Device name."), config: Path = CONFIG) -> None:
    """Read every point of one device once and print value, unit and quality."""
    setup_logging("WARNING")
    loaded, registry = load_or_exit(config)
    spec = loaded.device(name)
    if spec is None:
        known = ", ".join(d.name for d in loaded.devices) or "none"
        typer.echo(f"no device named {name!r} in {config} (devices: {known})", err=True)
        raise typer.Exit(1)
    poller = DevicePoller(
        spec,
        registry.driver(spec.driver),
        loaded.tenant_contexts()[spec.tenant],
        sink=_NoSink(),
        gateway_id=loaded.config.gateway.id,
    )
    samples = asyncio.run(poller.read_once())
    table = Table("point", "value", "unit", "quality", "raw", "reason", title=f"{name} ({spec.driver})")
    for point, s in samples.items():
        table.add_row(
            point,
            _fmt(s.get("value")),
            s.get("unit") or "",
            s["quality"],
            _fmt(s.get("raw")),
            s.get("reason") or "",
        )
    Console().print(table)
    if any(s["quality"] == "bad" for s in samples.values()):
        raise typer.Exit(1)


def _fmt(value: object) -> str:
    return "" if value is None else str(value)


class _NoSink:
    async def append(self, event: object) -> None:  # a test read stores nothing
        return None
