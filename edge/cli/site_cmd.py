"""`edge site plan` and `edge site apply`: commission a whole site in one pass (edge.config.siteplan).

`plan` runs the drivers' discovery (as `edge device discover` does) over every `--scan`, concurrently, and
writes the plan file and the proposed point maps; `apply` appends the reviewed plan to the configuration, all
entries or none."""

from __future__ import annotations

import asyncio
import json
import shlex
from pathlib import Path
from typing import Any

import typer

from edge.cli.common import EXIT_CONFIG, setup_logging
from edge.cli.options import parse_scalar
from edge.cli.output import JSON_OPTION, Column, emit
from edge.config.siteplan import DEFAULT_PATTERN, PlanEntry, apply_plan, entry_for, plan_text
from edge.devices.commissioning import ProfileWriter
from edge.plugins import PluginRegistry
from edge.sdk.drivers import DiscoveredDevice, SupportsDiscovery
from edge.sdk.errors import ConfigError, DeviceError, PluginError

app = typer.Typer(
    no_args_is_help=True, help="Commission a whole site: discover it into a plan, then apply it."
)
CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")

Scan = tuple[str, dict[str, Any]]


def parse_scan(text: str) -> Scan:
    """'DRIVER key=value ...' -> (driver, target); raises typer.BadParameter naming what is wrong."""
    words = shlex.split(text)
    if not words or "=" in words[0]:
        raise typer.BadParameter(f"{text!r}: start with the driver, e.g. 'modbus host=10.0.0.5 units=1-20'")
    target: dict[str, Any] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{text!r}: expected key=value, got {word!r}")
        target[key] = parse_scalar(value)
    return words[0], target


@app.command("plan")
def plan(
    scan: list[str] = typer.Option(
        ...,
        "--scan",
        help="'DRIVER key=value ...': one discovery, with the driver's target keys (see its README); repeatable.",
    ),
    tenant: str = typer.Option(..., help="Tenant of every device found."),
    site: str = typer.Option(..., help="Site of every device found."),
    output: Path = typer.Option(Path("site-plan.toml"), "--output", "-o", help="Plan file to write."),
    name_pattern: str = typer.Option(
        DEFAULT_PATTERN,
        "--name-pattern",
        help="Device names: {site} {tenant} {driver} {n} (1, 2, ... in plan order), the connection's keys "
        "({host} {port} {unit_id} {address} {device_instance} {url}) and the identity's ({manufacturer} "
        "{model} {serial} {name}...); Python format syntax, e.g. '{site}-inv-{unit_id:02d}'.",
    ),
    poll_interval: float = typer.Option(5.0, help="Poll interval of every device (seconds)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Discover every scan and write a commissioning plan to review (then `edge site apply`)."""
    setup_logging("WARNING")
    scans = [parse_scan(text) for text in scan]
    registry = PluginRegistry.from_entry_points()
    results = asyncio.run(_discover_all(registry, scans))
    profiles = output.parent / f"{output.stem}-profiles"
    entries: list[PlanEntry] = []
    taken: set[str] = set()
    seen: set[str] = set()  # overlapping scans find a device twice: one entry
    for (driver, _), found in zip(scans, results, strict=True):
        for device in found:
            key = json.dumps([driver, device.connection], sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            try:
                entries.append(
                    entry_for(
                        device,
                        driver=driver,
                        tenant=tenant,
                        site=site,
                        profile=_profile(driver, device, profiles),
                        pattern=name_pattern,
                        n=len(entries) + 1,
                        taken=taken,
                        poll_interval=poll_interval,
                    )
                )
            except ValueError as exc:
                typer.echo(str(exc), err=True)
                raise typer.Exit(EXIT_CONFIG) from None
    header = {"tenant": tenant, "site": site, "name_pattern": name_pattern, "scans": scan}
    comment = (
        "Commissioning plan written by `edge site plan`. Review it: rename, delete or edit entries; `found` and\n"
        f"`identity` are for you and are not applied. Then: edge site apply {output}"
    )
    output.write_text(plan_text(header, entries, comment))
    rows = [
        {
            "name": e.fields["name"],
            "driver": e.fields["driver"],
            "found": e.found,
            "profile": e.fields["profile"],
        }
        for e in entries
    ]
    emit(rows, [Column(k, k) for k in ("name", "driver", "found", "profile")], as_json=as_json)
    typer.echo(
        f"wrote a plan of {len(entries)} device(s) to {output}; review it, then: edge site apply {output}",
        err=True,
    )
    if not entries:
        raise typer.Exit(1)


async def _discover_all(registry: PluginRegistry, scans: list[Scan]) -> list[list[DiscoveredDevice]]:
    return list(await asyncio.gather(*(_discover(registry, driver, target) for driver, target in scans)))


async def _discover(registry: PluginRegistry, driver: str, target: dict[str, Any]) -> list[DiscoveredDevice]:
    label = " ".join([driver, *(f"{k}={v}" for k, v in target.items())])
    try:
        plugin = registry.driver(driver)
    except PluginError as exc:
        typer.echo(f"{label}: {exc}", err=True)
        raise typer.Exit(1) from None
    if not isinstance(plugin, SupportsDiscovery):
        typer.echo(f"{label}: driver {driver!r} cannot discover devices", err=True)
        raise typer.Exit(1)
    try:
        found = await plugin.discover(dict(target), lambda line: typer.echo(f"[{label}] {line}", err=True))
    except (ValueError, DeviceError) as exc:
        typer.echo(f"{label}: discovery failed: {exc}", err=True)
        raise typer.Exit(1) from None
    return found


def _profile(driver: str, device: DiscoveredDevice, folder: Path) -> str:
    """The shipped profile discovery named, or the proposed point map written to `folder` (`ProfileWriter`:
    one file per point map, none replaced). '' when there is neither: apply then refuses the entry until a
    profile is set."""
    if not device.points:
        return device.profile_name
    path, _ = ProfileWriter(folder, driver).write(device)
    return str(path.resolve())


@app.command("apply")
def apply(
    plan_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="The reviewed plan file."),
    config: Path = CONFIG,
) -> None:
    """Add every device of the plan to the configuration, or none: problems are listed with their plan line."""
    try:
        names = apply_plan(config, plan_file)
    except ConfigError as exc:
        typer.echo(f"not applied: {len(exc.issues)} problem(s); nothing was changed in {config}:", err=True)
        for issue in exc.issues:
            typer.echo(f"  {issue}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    typer.echo(f"added {len(names)} device(s) to {config}; a running gateway picks them up on restart")
