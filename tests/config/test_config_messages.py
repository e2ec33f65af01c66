"""`edge config check` names what the user probably meant: the closest key, the profiles that exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e import write_config
from tests.helpers import free_port

EDGE = [sys.executable, "-m", "edge.cli"]
PROFILE = """
[profile]
name = "meter"
driver = "modbus"

[[points]]
name = "power"
adress = 0
"""


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE, "config", "check", str(config)], capture_output=True, text=True, timeout=60)


def test_an_unknown_key_suggests_the_closest_known_one_with_file_and_field(tmp_path: Path) -> None:
    config = write_config(tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=5020, devices=2)
    text = config.read_text().replace("point_min_interval", "point_min_intervall", 1)
    text = text.replace("poll_interval = 0.2", "pol_interval = 0.2", 1)
    config.write_text(text + '[[modules]]\nname = "solar"\nenabeld = true\n')
    result = check(config)
    assert result.returncode == 2
    for line in (
        f"{config}: bus.point_min_intervall: unknown key 'point_min_intervall': did you mean 'point_min_interval'?",
        # the entry's name, as for a driver's model (trial of 2026-12-07: "devices[0]" alone)
        f"{config}: devices[0] (inv-01).pol_interval: unknown key 'pol_interval': did you mean 'poll_interval'?",
        f"{config}: modules[0] (solar).enabeld: unknown key 'enabeld': did you mean 'enabled'?",
    ):
        assert line in result.stderr, result.stderr


def test_an_unknown_key_of_a_driver_model_or_profile_is_named_too(tmp_path: Path) -> None:
    config = write_config(tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=5020, devices=2)
    config.write_text(
        config.read_text()
        .replace("unit_id = 2", "unitid = 2")
        .replace('profile = "sunspec-inverter"', 'profile = "meter.toml"', 1)
    )
    (tmp_path / "meter.toml").write_text(PROFILE)
    result = check(config)
    assert result.returncode == 2
    where = "devices[1] (inv-02).connection.unitid"
    assert f"{config}: {where}: unknown key 'unitid': did you mean 'unit_id'?" in result.stderr
    profile = tmp_path / "meter.toml"
    assert (
        f"{profile}: points[0] (power).adress: unknown key 'adress': did you mean 'address'?" in result.stderr
    )
    config.write_text(config.read_text().replace("unitid = 2", "colour = 2"))
    listed = check(config).stderr  # nothing close: the keys there are
    assert "unknown key 'colour' (keys here: " in listed and "unit_id" in listed and "host" in listed


def test_a_misspelled_profile_lists_the_profiles_that_exist_closest_first(tmp_path: Path) -> None:
    config = write_config(tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=5020, devices=1)
    config.write_text(config.read_text().replace('"sunspec-inverter"', '"sunspec-invertr"'))
    result = check(config)
    assert result.returncode == 2
    assert "profile 'sunspec-invertr': file not found" in result.stderr
    assert "profiles shipped with modbus: sunspec-inverter (or a path to a .toml file)" in result.stderr
    for name in ("meters.toml", "boiler.toml"):
        (tmp_path / name).write_text(PROFILE)
    config.write_text(config.read_text().replace('"sunspec-invertr"', '"meter.toml"'))
    local = check(config).stderr
    assert "profile 'meter.toml': file not found" in local
    shown = local.split(f"profiles in {tmp_path}: ")[1].strip()
    assert shown.startswith("meters.toml, ") and set(shown.split(", ")) == {
        "meters.toml",
        "boiler.toml",
        "edge.toml",
    }


def test_a_profile_named_without_its_path_points_to_the_file_discovery_saved(tmp_path: Path) -> None:
    """The trial of 2026-12-07: discovery's table says "proposed profile TC-1" and saves profiles/TC-1.toml;
    `--profile TC-1` then listed only the driver's shipped profiles."""
    config = write_config(tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=5020, devices=1)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "meter-abc.toml").write_text(PROFILE)
    config.write_text(config.read_text().replace('"sunspec-inverter"', '"meter-abc"'))
    result = check(config)
    assert result.returncode == 2
    assert (
        "profiles shipped with modbus: sunspec-inverter; or a file beside the configuration: did you mean "
        "'profiles/meter-abc.toml'?" in result.stderr
    ), result.stderr
