"""Configuration errors name the file, the field and the reason; `edge config check` shows them and exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import load_config
from edge.plugins import PluginRegistry
from edge.sdk.errors import ConfigError
from tests.helpers import free_port

VALID = """
[gateway]
id = "gw1"

[[tenants]]
id = "acme"
entitlements = ["solar"]

[[sites]]
id = "roof"

[[devices]]
name = "inv-01"
driver = "modbus"
tenant = "acme"
site = "roof"
profile = "sunspec-inverter"
connection = { host = "127.0.0.1", port = 5020, unit_id = 1 }
"""


@pytest.fixture(scope="module")
def registry() -> PluginRegistry:
    return PluginRegistry.from_entry_points()


def _write(tmp_path: Path, text: str, name: str = "edge.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _issues(path: Path, registry: PluginRegistry) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, registry)
    return [str(i) for i in caught.value.issues]


def test_valid_config_loads_devices_with_profile_points(tmp_path: Path, registry: PluginRegistry) -> None:
    loaded = load_config(_write(tmp_path, VALID), registry)
    (device,) = loaded.devices
    names = {p.name for p in device.points}
    assert {"ac_power", "lifetime_energy", "dc_voltage", "operating_state", "cabinet_temperature"} <= names
    assert loaded.tenant_contexts()["acme"].entitled("solar")


def test_wrong_field_type_names_file_field_and_reason(tmp_path: Path, registry: PluginRegistry) -> None:
    path = _write(tmp_path, VALID.replace("port = 5020", 'port = "high"'))
    (issue,) = _issues(path, registry)
    assert str(path) in issue
    assert "devices[0] (inv-01).connection.port" in issue
    assert "integer" in issue


def test_unknown_tenant_site_and_driver_are_all_reported(tmp_path: Path, registry: PluginRegistry) -> None:
    text = VALID.replace('tenant = "acme"', 'tenant = "nobody"').replace(
        'site = "roof"\npro', 'site = "cellar"\npro'
    )
    text = text.replace('driver = "modbus"', 'driver = "canbus"')
    issues = _issues(_write(tmp_path, text), registry)
    joined = "\n".join(issues)
    assert "devices[0] (inv-01).tenant: unknown tenant 'nobody'" in joined
    assert "devices[0] (inv-01).site: unknown site 'cellar'" in joined
    assert "devices[0] (inv-01).driver" in joined and "no such driver" in joined


def test_unknown_field_is_refused(tmp_path: Path, registry: PluginRegistry) -> None:
    issues = _issues(_write(tmp_path, VALID.replace('id = "gw1"', 'id = "gw1"\npoll = 3')), registry)
    assert any(
        "gateway.poll: unknown key 'poll' (keys here: id, name, data_dir, event_loop)" in i for i in issues
    )


def test_toml_syntax_error_names_the_file(tmp_path: Path, registry: PluginRegistry) -> None:
    path = _write(tmp_path, VALID + "\n[[devices]\n")
    (issue,) = _issues(path, registry)
    assert str(path) in issue and "not valid TOML" in issue


def test_bad_profile_point_names_the_profile_file_and_point(tmp_path: Path, registry: PluginRegistry) -> None:
    _write(
        tmp_path,
        '[profile]\nname = "meter"\ndriver = "modbus"\n\n'
        '[[points]]\nname = "power"\naddress = 70000\ntype = "int16"\n\n'
        '[[points]]\nname = "energy"\naddress = 10\ntype = "uint32"\nscale_factor = "missing_sf"\n',
        "meter.toml",
    )
    issues = _issues(_write(tmp_path, VALID.replace('"sunspec-inverter"', '"meter.toml"')), registry)
    joined = "\n".join(issues)
    assert "meter.toml: points[0] (power).address" in joined
    assert "meter.toml: points[1] (energy).scale_factor: no point named 'missing_sf'" in joined


def test_missing_profile_is_reported_on_the_device(tmp_path: Path, registry: PluginRegistry) -> None:
    issues = _issues(_write(tmp_path, VALID.replace('"sunspec-inverter"', '"nonexistent"')), registry)
    assert any("devices[0] (inv-01).profile" in i and "file not found" in i for i in issues)


def test_duplicate_device_names_are_refused(tmp_path: Path, registry: PluginRegistry) -> None:
    device = VALID[VALID.index("[[devices]]") :]
    issues = _issues(_write(tmp_path, VALID + "\n" + device), registry)
    assert any("'inv-01' is defined twice" in i for i in issues)


def test_topic_unsafe_names_are_refused(tmp_path: Path, registry: PluginRegistry) -> None:
    issues = _issues(_write(tmp_path, VALID.replace('id = "acme"', 'id = "ac/me"')), registry)
    assert any("tenants[0] (ac/me).id" in i for i in issues)


def test_config_check_cli_exits_nonzero_with_the_errors(tmp_path: Path) -> None:
    bad = _write(tmp_path, VALID.replace("port = 5020", "port = 0"))
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "config", "check", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "devices[0] (inv-01).connection.port" in result.stderr
    # a free bus port: `config check` also reports a port already taken (a system Mosquitto on 1883)
    good = _write(tmp_path, VALID + f"\n[bus]\nport = {free_port()}\n", "good.toml")
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "config", "check", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "1 device(s)" in result.stdout


def test_shipped_example_config_is_valid(registry: PluginRegistry) -> None:
    loaded = load_config(Path(__file__).resolve().parents[2] / "examples" / "edge.toml", registry)
    assert [d.name for d in loaded.devices] == ["inv-roof-1", "inv-roof-2"]


def test_exported_event_schemas_are_current() -> None:
    import json

    from edge.sdk.events import json_schemas

    folder = Path(__file__).resolve().parents[2] / "docs" / "schemas"
    for event_type, schema in json_schemas().items():
        committed = json.loads((folder / f"{event_type}.schema.json").read_text())
        assert committed == schema, f"run `edge events schema --out docs/schemas` ({event_type} changed)"
