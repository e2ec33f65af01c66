"""Commissioning plans: a whole site's devices, found by discovery, reviewed by a person, applied in one step.

`edge site plan` runs each driver's discovery (`SupportsDiscovery`) over the scans it is given and writes a
plan file: a `[plan]` table (tenant, site, naming pattern) and one `[[devices]]` table per device found, as the
configuration file takes it (name from the pattern, tenant, site, profile, poll interval, connection), plus
two keys for the reader that apply drops: `found` (where discovery saw it) and `identity` (what it said). The
technician edits or deletes entries, then `edge site apply` appends them all to the configuration in one
validated replacement: if any entry is invalid (a bad name, a clash with a configured device, an unknown
tenant, site or profile, a bad connection), nothing is written and every problem is listed with the plan line
of its entry.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from pydantic import ValidationError

from edge.config.edit import append_devices, device_table
from edge.config.loader import format_location, load_config
from edge.config.models import DeviceConfig
from edge.plugins import PluginRegistry
from edge.sdk.drivers import DiscoveredDevice
from edge.sdk.errors import ConfigError, ConfigIssue

__all__ = [
    "DEFAULT_PATTERN",
    "INFO_KEYS",
    "PlanEntry",
    "apply_plan",
    "entry_for",
    "format_name",
    "plan_text",
    "read_plan",
]

DEFAULT_PATTERN = "{site}-{driver}-{n:03d}"
INFO_KEYS = ("found", "identity")  # for the reviewer; dropped when the plan is applied
_NAME_BAD = re.compile(r"[^A-Za-z0-9_.\-]+")
_ENTRY_HEADER = re.compile(r"^\s*\[\[\s*devices\s*\]\]\s*(#.*)?$")
_DEVICE_INDEX = re.compile(r"^devices\[(\d+)\]")


@dataclass
class PlanEntry:
    """One device of a plan, as written: the device table's fields, its connection, and the reviewer's keys."""

    fields: dict[str, Any]
    connection: dict[str, Any]
    found: str = ""
    identity: dict[str, str] = field(default_factory=dict)


def entry_for(
    device: DiscoveredDevice,
    *,
    driver: str,
    tenant: str,
    site: str,
    profile: str,
    pattern: str,
    n: int,
    taken: set[str],
    poll_interval: float,
) -> PlanEntry:
    """The plan entry of a discovered device, named by `pattern` (unique among `taken`, which it joins)."""
    values = {"site": site, "tenant": tenant, "driver": driver, "n": n} | dict(device.identity)
    values |= {k: v for k, v in device.connection.items() if isinstance(v, str | int | float)}
    name = _unique(_clean(format_name(pattern, values)) or f"{driver}-{n}", taken)
    fields = device_table(name, driver, tenant, site, profile, poll_interval)
    return PlanEntry(fields, dict(device.connection), device.address, dict(device.identity))


def format_name(pattern: str, values: Mapping[str, Any]) -> str:
    """`pattern` filled from `values`; raises ValueError naming an unknown field and the known ones."""
    try:
        return string.Formatter().vformat(pattern, (), dict(values))
    except KeyError as exc:
        raise ValueError(
            f"the naming pattern {pattern!r} uses {{{exc.args[0]}}}, which this device does not have "
            f"(it has: {', '.join(sorted(values))})"
        ) from None
    except (ValueError, IndexError) as exc:
        raise ValueError(f"the naming pattern {pattern!r} is not valid: {exc}") from None


def _clean(text: str) -> str:
    return _NAME_BAD.sub("-", text).strip("-_.")[:64]


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name[:60]}-{n}", n + 1
    taken.add(candidate)
    return candidate


def plan_text(header: Mapping[str, Any], entries: Sequence[PlanEntry], comment: str) -> str:
    """The plan file: a `[plan]` table, then one `[[devices]]` table per entry."""
    doc = tomlkit.document()
    for line in comment.splitlines():
        doc.add(tomlkit.comment(line))
    plan = tomlkit.table()
    plan.update(dict(header))
    doc["plan"] = plan
    devices = tomlkit.aot()
    for entry in entries:
        table = tomlkit.table()
        table.update(entry.fields)
        table["found"] = entry.found
        if entry.identity:
            identity = tomlkit.inline_table()
            identity.update(entry.identity)
            table["identity"] = identity
        connection = tomlkit.inline_table()
        connection.update(entry.connection)
        table["connection"] = connection
        devices.append(table)
    doc["devices"] = devices
    return tomlkit.dumps(doc)


def read_plan(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The plan's device tables (without the reviewer's keys) and the line of each; raises ConfigError."""
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigIssue(str(path), "", f"not valid TOML: {exc}")]) from None
    devices = raw.get("devices")
    if not isinstance(devices, list) or not devices:
        raise ConfigError([ConfigIssue(str(path), "devices", "the plan has no [[devices]] entry to apply")])
    lines = [number for number, line in enumerate(text.splitlines(), 1) if _ENTRY_HEADER.match(line)]
    if len(lines) != len(devices):  # written as an inline array: no header lines to point at
        lines = [0] * len(devices)
    entries = [{k: v for k, v in d.items() if k not in INFO_KEYS} for d in devices]
    return entries, lines


def apply_plan(config: Path, plan: Path) -> list[str]:
    """Append every entry of `plan` to `config` in one validated replacement; returns the names added.

    Raises ConfigError, nothing written, listing every problem at the plan line of its entry: name clashes
    first, then whatever the full configuration check finds in the other entries."""
    entries, lines = read_plan(plan)
    registry = PluginRegistry.from_entry_points()
    existing = {d.name for d in load_config(config, registry, resolve_secrets=False).devices}
    issues: list[ConfigIssue] = []
    seen: dict[str, int] = {}
    checked: list[
        int
    ] = []  # entries the configuration check sees (a clashing one would only repeat the clash)
    for index, entry in enumerate(entries):
        name, where = str(entry.get("name", "")), _where(lines, index, entry)
        if name in existing:
            issues.append(
                ConfigIssue(str(plan), where, f"a device named {name!r} is already configured in {config}")
            )
        elif name in seen:
            issues.append(
                ConfigIssue(str(plan), where, f"the name {name!r} is also the entry at line {seen[name]}")
            )
        else:
            problems = _entry_problems(entry)
            issues += [ConfigIssue(str(plan), f"{where}{at}", reason) for at, reason in problems]
            if not problems:
                checked.append(index)
        seen.setdefault(name, lines[index])
    tables = [(_fields(entries[i]), dict(entries[i].get("connection", {}))) for i in checked]
    try:
        append_devices(config, tables, dry_run=bool(issues))
    except ConfigError as exc:
        moved = [_plan_issue(issue, plan, lines, entries, checked, len(existing)) for issue in exc.issues]
        raise ConfigError(issues + moved) from None
    if issues:
        raise ConfigError(issues)
    return [str(e["name"]) for e in entries]


def _entry_problems(entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The entry's own problems as a device table (its fields' types and names), each with its field path; the
    configuration check finds the rest (tenant, site, profile, connection) once these are fixed."""
    try:
        DeviceConfig.model_validate(entry)
    except ValidationError as exc:
        return [("." + format_location(e["loc"]), e["msg"]) for e in exc.errors()]
    return []


def _fields(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "connection"}


def _where(lines: Sequence[int], index: int, entry: Mapping[str, Any]) -> str:
    line = f"line {lines[index]}" if lines[index] else f"devices[{index}]"
    return f"{line} ({entry.get('name', '?')})"


def _plan_issue(
    issue: ConfigIssue,
    plan: Path,
    lines: Sequence[int],
    entries: Sequence[Mapping[str, Any]],
    checked: Sequence[int],
    before: int,
) -> ConfigIssue:
    """A configuration problem of an appended device, moved to its plan entry's line; others stay as they are."""
    match = _DEVICE_INDEX.match(issue.location)
    position = int(match[1]) - before if match else -1
    if match is None or not 0 <= position < len(checked):
        return issue
    index = checked[position]
    rest = re.sub(r"^ \([^)]*\)", "", issue.location[match.end() :])
    return ConfigIssue(str(plan), _where(lines, index, entries[index]) + rest, issue.reason)
