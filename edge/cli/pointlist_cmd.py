"""`edge point import` and `edge point export`: point lists (CSV, and a driver's own formats such as BACnet EDE)
to profiles and device entries, and every configured point back to a file. The logic is edge.config.pointlists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from edge.cli.common import EXIT_CONFIG, load_or_exit
from edge.cli.device_cmd import add_entries
from edge.cli.options import parse_pairs
from edge.config.edit import device_table
from edge.config.pointlists import (
    CSV_FORMAT,
    export_csv,
    formats_of,
    point_fields,
    profile_text,
    read_point_list,
    rows_of_device,
    validate_rows,
)
from edge.plugins import PluginRegistry
from edge.sdk.drivers import Driver, SupportsPointLists
from edge.sdk.errors import ConfigError, PluginError

CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")


def import_points(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="The point list: .csv or .ede."),
    driver: str = typer.Option(..., help="Driver the points are for, e.g. modbus or bacnet."),
    output: Path = typer.Option(..., "--output", "-o", help="Profile file to write (TOML)."),
    name: str = typer.Option("", help="Profile name (default: the output file's name)."),
    format: str = typer.Option(
        "", help="csv, or the driver's own (bacnet: ede); default: the file's suffix."
    ),
    companion: Path = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="A file the point list refers to (BACnet EDE: its state texts).",
    ),
    device: str = typer.Option(
        None, help="The device to take from a file that lists several (EDE: its device instance)."
    ),
    add_device: str = typer.Option(None, help="Also add a device entry with this name using the profile."),
    tenant: str = typer.Option(None, help="With --add-device: its tenant."),
    site: str = typer.Option(None, help="With --add-device: its site."),
    connection: list[str] = typer.Option(
        None, "--connection", help="With --add-device: key=value, repeatable."
    ),
    poll_interval: float = typer.Option(5.0, help="With --add-device: seconds between polls."),
    config: Path = CONFIG,
) -> None:
    """Make a profile from a point list (every line checked first: errors name the line and the field), and
    optionally a device entry that uses it."""
    plugin = _driver(driver)
    try:
        listed = read_point_list(file, plugin, driver, format or None, companion)
        rows = rows_of_device(listed, device, str(file))
        points = validate_rows(rows, plugin, str(file))
    except ConfigError as exc:
        _refuse(f"{file} is not imported", exc)
    if add_device is not None and (tenant is None or site is None):
        typer.echo("--add-device needs --tenant and --site", err=True)
        raise typer.Exit(EXIT_CONFIG)
    for note in listed.notes:
        typer.echo(f"note: {note}", err=True)
    profile = name or output.stem
    output.parent.mkdir(parents=True, exist_ok=True)
    source = f"Imported by `edge point import` from {file.name}"
    output.write_text(
        profile_text(profile, driver, f"from {file.name}", [point_fields(p) for p in points], source)
    )
    typer.echo(f"wrote profile {profile!r} with {len(points)} points to {output}")
    if add_device is not None:
        key = rows[0].device if rows else ""
        given: dict[str, Any] = dict(listed.devices.get(key, {}))
        given.pop("name", None)
        entry = device_table(add_device, driver, tenant, site, str(output.resolve()), poll_interval)
        add_entries(config, [(entry, given | parse_pairs(connection, "--connection"))])
        typer.echo(f"added device {add_device!r} to {config}")


def export_points(
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default: standard output)."),
    format: str = typer.Option(CSV_FORMAT, help="csv (every driver), or a driver's own (bacnet: ede)."),
    device: list[str] = typer.Option(None, "--device", help="Only these devices (repeatable)."),
    config: Path = CONFIG,
) -> None:
    """Write every configured point (or those of --device) to a point list file."""
    loaded, registry = load_or_exit(config, secrets=False)
    devices = list(loaded.devices)
    if device:
        unknown = sorted(set(device) - {d.name for d in devices})
        if unknown:
            typer.echo(f"no device(s) {', '.join(unknown)} in {config}", err=True)
            raise typer.Exit(1)
        devices = [d for d in devices if d.name in device]
    if format == CSV_FORMAT:
        text = export_csv(devices)
    else:
        chosen = [d for d in devices if format in formats_of(registry.driver(d.driver))]
        if not chosen:
            typer.echo(f"no configured device's driver writes {format!r} files", err=True)
            raise typer.Exit(1)
        plugin = registry.driver(chosen[0].driver)
        assert isinstance(plugin, SupportsPointLists)
        text = plugin.write_point_list([d for d in chosen if d.driver == chosen[0].driver], format)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(
            f"wrote {sum(len(d.points) for d in devices)} points of {len(devices)} device(s) to {output}",
            err=True,
        )


def _driver(name: str) -> Driver:
    try:
        return PluginRegistry.from_entry_points().driver(name)
    except PluginError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def _refuse(what: str, exc: ConfigError) -> None:
    typer.echo(f"{what} ({len(exc.issues)} problem(s)):", err=True)
    for issue in exc.issues:
        typer.echo(f"  {issue}", err=True)
    raise typer.Exit(EXIT_CONFIG)
