"""Every domain module is installed, its manifest declares what it consumes and produces, and each produced
event's schema names a pydantic model that exists. That they never import each other: tests/sdk/test_boundaries.py."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from pydantic import BaseModel

from edge.config import load_config
from edge.plugins import PluginRegistry
from edge.sdk.errors import ConfigError

MODULES = ("solar", "billing", "lifts", "hvac", "alarms")
ROOT = Path(__file__).resolve().parents[2] / "modules"


@pytest.mark.parametrize("name", MODULES)
def test_manifest_declares_entitlement_consumes_and_produces_with_real_schemas(name: str) -> None:
    plugin = PluginRegistry.from_entry_points().module(name)
    assert plugin is not None, name
    manifest = plugin.manifest
    assert manifest.entitlement == name and manifest.run_mode == "in_process"
    assert manifest.consumes and all(c.versions == ">=1.0,<2" for c in manifest.consumes)
    for produced in manifest.produces:
        assert produced.schema is not None, produced.type
        module_name, _, model_name = produced.schema.partition(":")
        model = getattr(importlib.import_module(module_name), model_name)
        assert issubclass(model, BaseModel) and model.model_json_schema()["properties"]
    assert (ROOT / name / "README.md").read_text().count("[[modules]]") >= 1


def test_a_module_config_error_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(
        '[gateway]\nid = "gw"\n[[tenants]]\nid = "acme"\n[[sites]]\nid = "roof"\n'
        '[[modules]]\nname = "billing"\nconfig = { timezone = "Mars/Olympus" }\n'
        '[[modules]]\nname = "hvac"\nconfig = { schedules = [{ tenant = "acme", site = "roof", device = "v", '
        'entries = [{ at = "25:00", value = 21.0 }] }] }\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, PluginRegistry.from_entry_points())
    issues = [str(i) for i in info.value.issues]
    assert (
        f"{path}: modules[0] (billing).config.timezone: Value error, unknown time zone 'Mars/Olympus'"
        in issues
    )
    assert any(i.startswith(f"{path}: modules[1] (hvac).config.schedules[0].entries[0].at:") for i in issues)
