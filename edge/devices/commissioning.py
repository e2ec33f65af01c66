"""Commissioning: find devices with a driver's discovery, write the proposed point map as a profile, and add
the device to the configuration file (comments kept, validated first: edge.config.edit).

One code path for `edge device discover|add` and the console (edge.api.routes.commissioning): the file stays
the one source of truth, and a running gateway starts polling what the file gained (Gateway.start_new_devices).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tomlkit

from edge.config.edit import replace_if_valid
from edge.config.pointlists import profile_text
from edge.plugins import PluginRegistry
from edge.sdk.drivers import DiscoveredDevice, SupportsDiscovery
from edge.sdk.errors import PluginError

MODES = {"auto": "auto", "push": "auto", "poll": "poll"}  # push is what auto does where the driver can
_FILE_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class CommissioningError(ValueError):
    """Discovery or an addition cannot be done as asked (the message says why)."""


async def discover(
    registry: PluginRegistry, driver: str, targets: Mapping[str, Any], progress: Callable[[str], None]
) -> list[DiscoveredDevice]:
    """Devices the driver finds at `targets`; raises CommissioningError, or the driver's DeviceError."""
    try:
        plugin = registry.driver(driver)
    except PluginError as exc:
        raise CommissioningError(str(exc)) from None
    if not isinstance(plugin, SupportsDiscovery):
        raise CommissioningError(f"driver {driver!r} cannot discover devices")
    return list(await plugin.discover(dict(targets), progress))


def write_profile(folder: Path, driver: str, device: DiscoveredDevice, name: str | None = None) -> Path:
    """The proposed point map as a profile file in `folder` (named `name`, else the proposal's name)."""
    folder.mkdir(parents=True, exist_ok=True)
    name, text = proposed_profile(driver, device, name)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


class ProfileWriter:
    """Writes discovery's proposed point maps into one folder, as `edge device discover --save-profiles` and
    `edge site plan` do: one file for the devices proposing the same points (the first one's name), `-2`,
    `-3`... when other points would take a name, and never over a file that holds other points, which may be a
    profile someone reviewed and edited (a second run writes its proposal beside it)."""

    def __init__(self, folder: Path, driver: str) -> None:
        self._folder = folder
        self._driver = driver

    def write(self, device: DiscoveredDevice) -> tuple[Path, str]:
        """(the file holding the device's proposed points, what happened to it: "written", "the same points"
        (an existing file, left as it is) or "<existing file> holds other points (reviewed?): kept")."""
        name, text = proposed_profile(self._driver, device)
        path, n, kept = self._folder / f"{name}.toml", 2, None
        while path.exists() and _points_of(path.read_text()) != _points_of(text):
            kept = kept or path
            path, n = self._folder / f"{name}-{n}.toml", n + 1
        if path.exists():
            return path, "the same points"
        self._folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path, "written" if kept is None else f"{kept} holds other points (reviewed?): kept"


def _points_of(text: str) -> str:
    """A profile file's point map, without the header naming where and from which device it was proposed."""
    return text.partition("[[points]]")[2]


def proposed_profile(driver: str, device: DiscoveredDevice, name: str | None = None) -> tuple[str, str]:
    """The file-safe name and the profile file text of the point map discovery proposed for `device`."""
    name = name or device.profile_name or device.address
    name = _FILE_SAFE.sub("-", name).strip("-.") or "device"
    description = ", ".join(f"{k}={v}" for k, v in device.identity.items())
    source = f"Proposed by `edge device discover {driver}` from {device.address}"
    return name, profile_text(name, driver, description, device.points, source)


def add_device(
    config: Path,
    *,
    name: str,
    driver: str,
    tenant: str,
    site: str,
    profile: str,
    connection: Mapping[str, Any],
    poll_interval: float = 1.0,
    timeout: float = 1.0,
    mode: str = "auto",
) -> None:
    """Append a [[devices]] table to the file; raises CommissioningError, or ConfigError (file untouched)
    when the configuration would be invalid."""
    if mode not in MODES:
        raise CommissioningError(f"mode must be poll, push or auto, not {mode!r}")
    document = tomlkit.parse(config.read_text())
    devices = document.setdefault("devices", tomlkit.aot())
    entry: dict[str, Any] = {
        "name": name,
        "driver": driver,
        "tenant": tenant,
        "site": site,
        "profile": profile,
        "poll_interval": poll_interval,
        "timeout": timeout,
    }
    if MODES[mode] != "auto":  # "auto" is the default: leave the file as short as it was
        entry["mode"] = MODES[mode]
    table = tomlkit.table()
    table.update(entry)
    inline = tomlkit.inline_table()
    inline.update(dict(connection))
    table["connection"] = inline
    devices.append(table)
    replace_if_valid(config, tomlkit.dumps(document))


def renamed_points(device: DiscoveredDevice, names: Mapping[str, str]) -> DiscoveredDevice:
    """The proposal with points renamed (`names`: proposed name -> new name); names must stay unique."""
    unknown = set(names) - {str(p.get("name")) for p in device.points}
    if unknown:
        raise CommissioningError(f"no proposed point named {sorted(unknown)[0]!r}")
    points = [{**p, "name": names.get(str(p.get("name")), p.get("name"))} for p in device.points]
    seen: set[str] = set()
    for point in points:
        if point["name"] in seen:
            raise CommissioningError(f"two points would be named {point['name']!r}")
        seen.add(str(point["name"]))
    return DiscoveredDevice(device.address, device.identity, device.connection, points, device.profile_name)
