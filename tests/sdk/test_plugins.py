"""Plug-ins: found through entry points, manifests checked, a broken one reported by name (their import
boundaries: test_boundaries.py)."""

from __future__ import annotations

import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from edge.plugins import DRIVER_GROUP, MODULE_GROUP, PluginRegistry, read_manifest
from edge.sdk.drivers import Driver
from edge.sdk.errors import PluginError

ROOT = Path(__file__).resolve().parents[2]


def test_installed_drivers_load_through_entry_points() -> None:
    registry = PluginRegistry.from_entry_points().load_all()
    assert "modbus" in registry.drivers
    assert isinstance(registry.driver("modbus"), Driver)
    assert registry.drivers["modbus"].manifest.kind == "driver"


def test_a_broken_plugin_is_reported_by_name_and_the_others_still_load() -> None:
    broken = [
        EntryPoint(name="canbus", value="no_such_package.driver:CanDriver", group=DRIVER_GROUP),
        EntryPoint(
            name="modbus2", value="drivers.modbus:ModbusDriver", group=DRIVER_GROUP
        ),  # manifest says 'modbus'
        EntryPoint(
            name="billing", value="tests.sdk.test_plugins:NotAModule", group=MODULE_GROUP
        ),  # no manifest
    ]
    registry = PluginRegistry.from_entry_points(broken).load_all()
    assert "modbus" in registry.drivers
    assert "No module named 'no_such_package'" in registry.failures["canbus"]
    assert "differs from entry point" in registry.failures["modbus2"]
    assert "manifest" in registry.failures["billing"]
    with pytest.raises(PluginError, match=r"canbus.*failed to load"):
        registry.driver("canbus")


class NotAModule:
    pass


def _plugin_folders() -> list[Path]:
    """drivers/<name>/ and modules/<name>/, and top-level plug-ins such as cloud_sync/."""
    found = [*ROOT.glob("*/*/manifest.toml"), *ROOT.glob("*/manifest.toml")]
    return sorted(p.parent for p in found if not p.relative_to(ROOT).parts[0].startswith("."))


@pytest.mark.parametrize("folder", _plugin_folders(), ids=lambda p: p.name)
def test_every_plugin_folder_has_a_valid_manifest_named_after_it(folder: Path) -> None:
    top_level = folder.parent == ROOT
    package = folder.name if top_level else f"{folder.parent.name}.{folder.name}"
    manifest = read_manifest(package)
    assert manifest.name == folder.name
    if not top_level:
        assert manifest.kind == {"drivers": "driver", "modules": "module"}[folder.parent.name]
    assert (folder / "README.md").is_file(), "a plug-in documents itself with a sample config"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    group = DRIVER_GROUP if manifest.kind == "driver" else MODULE_GROUP
    assert pyproject["project"]["entry-points"][group][manifest.name].startswith(package)
