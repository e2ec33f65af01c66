from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any, NoReturn

import tomlkit
import typer

from edge.cli.common import EXIT_CONFIG, load_or_exit, setup_logging
from edge.cli.options import parse_pairs
from edge.cli.output import JSON_OPTION, Column, emit
from edge.config.edit import append_devices, replace_if_valid
from edge.config.suggest import listing
from edge.devices.commissioning import CommissioningError, ProfileWriter
from edge.devices.commissioning import add_device as add_to_config
from edge.devices.commissioning import discover as discover_devices
from edge.devices.polling import DevicePoller, reading_mode
from edge.plugins import PluginRegistry
from edge.sdk.errors import ConfigError, DeviceError

app = typer.Typer(no_args_is_help=True, help="List, test, discover, add and remove devices.")
CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")


@app.command("list")
def list_devices(config: Path = CONFIG, as_json: bool = JSON_OPTION) -> None:
    """Show every configured device with its driver, tenant, site, profile, point count and how it is read
    (mode "push": changes as the device reports them, COV or subscriptions; "poll": every poll interval)."""
    loaded, registry = load_or_exit(config)
    rows = [
        {
            "device": d.name,
            "driver": d.driver,
            "tenant": d.tenant,
            "site": d.site,
            "profile": d.profile,
            "points": len(d.points),
            "mode": reading_mode(d, registry.driver(d.driver)),
            "configured_mode": d.mode,
            "poll_interval": d.poll_interval,
        }
        for d in loaded.devices
    ]
    columns = [Column(k, k) for k in ("device", "driver", "tenant", "site", "profile", "points", "mode")]
    emit(rows, [*columns, Column("poll_interval", "poll (s)", lambda s: f"{s:g}")], as_json=as_json)


@app.command("test")
def test_device(
    name: str = typer.Argument(..., help="Device name."), config: Path = CONFIG, as_json: bool = JSON_OPTION
) -> None:
    """Read every point of one device once and print value, unit and quality (exit 1: a point is bad).

    A reason most points share (a dead device) is printed once below the table; --json keeps each point's."""
    setup_logging("WARNING")
    loaded, registry = load_or_exit(config)
    spec = loaded.device(name)
    if spec is None:
        known = listing(name, (d.name for d in loaded.devices))
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
    rows = [
        {"point": point, **{k: s.get(k) for k in ("value", "unit", "quality", "raw", "reason")}}
        for point, s in samples.items()
    ]
    columns = [Column(k, k) for k in ("point", "value", "unit", "quality", "raw", "reason")]
    if as_json:  # complete: every point with its own reason
        emit(rows, columns, as_json=True)
    else:
        _emit_with_shared_reason(rows, columns, f"{name} ({spec.driver})")
    if any(s["quality"] == "bad" for s in samples.values()):
        raise typer.Exit(1)


def shared_reason(rows: list[dict[str, Any]]) -> tuple[str, int] | None:
    """The reason most points have, and how many, when more than half of them (and at least two) have it: a
    dead device gives every point the same reason, which a table should say once, not once a row."""
    counts = Counter(row["reason"] for row in rows if row.get("reason"))
    if not counts:
        return None
    reason, count = counts.most_common(1)[0]
    return (reason, count) if count >= 2 and count * 2 > len(rows) else None


def _emit_with_shared_reason(rows: list[dict[str, Any]], columns: list[Column], title: str) -> None:
    shared = shared_reason(rows)
    if shared is None:
        emit(rows, columns, as_json=False, title=title)
        return
    reason, count = shared
    rest = [{**row, "reason": None} if row.get("reason") == reason else row for row in rows]
    if not any(row.get("reason") for row in rest):  # nothing left to say per point
        columns = [c for c in columns if c.key != "reason"]
    emit(rest, columns, as_json=False, title=title)
    share = f"all {count}" if count == len(rows) else f"{count} of {len(rows)}"
    typer.echo(f"{share} points: {reason}")


@app.command("discover")
def discover(
    driver: str = typer.Argument(..., help="Driver to search with, e.g. bacnet or opcua."),
    target: list[str] = typer.Option(None, "--target", "-t", help="Driver-specific key=value, repeatable."),
    save_profiles: Path = typer.Option(None, help="Write each proposed point map to this folder."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Find devices on the network and propose a point map for each (see the driver's README for targets)."""
    setup_logging("WARNING")
    registry = PluginRegistry.from_entry_points()
    try:
        found = asyncio.run(
            discover_devices(
                registry, driver, parse_pairs(target, "--target"), lambda line: typer.echo(line, err=True)
            )
        )
    except CommissioningError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    except (ValueError, DeviceError) as exc:
        typer.echo(f"discovery failed: {exc}", err=True)
        raise typer.Exit(1) from None
    rows = [
        {
            "address": d.address,
            "identity": d.identity,
            "points": len(d.points),
            "profile": d.profile_name,
            "connection": d.connection,
        }
        for d in found
    ]
    columns = [Column("address", "address"), Column("identity", "identity"), Column("points", "points")]
    emit(
        rows,
        [*columns, Column("profile", "proposed profile"), Column("connection", "connection")],
        as_json=as_json,
    )
    if save_profiles is not None:
        profiles = ProfileWriter(save_profiles, driver)
        for device in found:
            if device.points:
                path, what = profiles.write(device)
                typer.echo(f"proposed point map of {device.address}: {path} ({what})", err=True)
    if not found:
        raise typer.Exit(1)


@app.command("add")
def add_device(
    name: str = typer.Argument(..., help="New device name (a topic level: letters, digits, _ . -)."),
    driver: str = typer.Option(..., help="Driver, e.g. modbus."),
    tenant: str = typer.Option(..., help="Tenant id the device belongs to."),
    site: str = typer.Option(..., help="Site id."),
    profile: str = typer.Option(..., help="Shipped profile name or a path to a profile file."),
    connection: list[str] = typer.Option(
        None, "--connection", help="key=value of the connection, repeatable."
    ),
    poll_interval: float = typer.Option(1.0, help="Seconds between polls."),
    timeout: float = typer.Option(1.0, help="Seconds per request."),
    mode: str = typer.Option(
        "auto",
        help="poll: always poll; push (or auto): take the changes the device pushes (BACnet COV, OPC UA "
        "subscriptions) where the driver offers them.",
    ),
    config: Path = CONFIG,
) -> None:
    """Add a device to the configuration file, keeping its comments; refused if the result would be invalid."""
    try:
        add_to_config(
            config,
            name=name,
            driver=driver,
            tenant=tenant,
            site=site,
            profile=profile,
            connection=parse_pairs(connection, "--connection"),
            poll_interval=poll_interval,
            timeout=timeout,
            mode=mode,
        )
    except CommissioningError as exc:
        typer.echo(f"--{exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    except ConfigError as exc:
        _report_invalid(exc, "added")
    typer.echo(f"added device {name!r} to {config}")


def add_entries(config: Path, entries: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Append device tables (fields, connection) to the file, keeping its comments; exits with the loader's
    problems if the result would be invalid (nothing is written then)."""
    try:
        append_devices(config, entries)
    except ConfigError as exc:
        _report_invalid(exc, "added")


@app.command("remove")
def remove_device(name: str = typer.Argument(..., help="Device name."), config: Path = CONFIG) -> None:
    """Remove a device's table from the configuration file, keeping comments and the order of the rest."""
    document = tomlkit.parse(config.read_text())
    devices = document.get("devices")
    names = [str(d.get("name")) for d in devices] if isinstance(devices, list) else []
    if name not in names:
        typer.echo(f"no device named {name!r} in {config} (devices: {listing(name, names)})", err=True)
        raise typer.Exit(1)
    assert isinstance(devices, list)
    del devices[names.index(name)]
    if not devices:
        del document["devices"]
    _replace_if_valid(config, tomlkit.dumps(document), action="removed")
    typer.echo(f"removed device {name!r} from {config}")


def _replace_if_valid(config: Path, text: str, action: str = "added") -> None:
    """Validate the new text with the full loader (drivers, profiles) before it replaces the file."""
    try:
        replace_if_valid(config, text)
    except ConfigError as exc:
        _report_invalid(exc, action)


def _report_invalid(exc: ConfigError, action: str) -> NoReturn:
    typer.echo(f"not {action}: the configuration would be invalid ({len(exc.issues)} problem(s)):", err=True)
    for issue in exc.issues:
        typer.echo(f"  {issue}", err=True)
    raise typer.Exit(EXIT_CONFIG) from None


class _NoSink:
    async def append(self, event: object) -> None:  # a test read stores nothing
        return None
