"""`edge device remove` and `edge device discover modbus`, through the typer app in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from drivers.modbus import ModbusDriver
from drivers.modbus.discovery import parse_units
from edge.cli.device_cmd import app
from simulators.modbus_inverter import InverterSimulator
from tests.e2e import load, write_config
from tests.helpers import free_port

runner = CliRunner()


def test_remove_keeps_comments_and_order_and_validates(tmp_path: Path) -> None:
    config = write_config(tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=5020, devices=3)
    text = config.read_text().replace('name = "inv-03"', '# the roof inverter, keep me\nname = "inv-03"')
    config.write_text("# site notes: keep me\n" + text)
    result = runner.invoke(app, ["remove", "inv-02", "-c", str(config)])
    assert result.exit_code == 0, result.output
    after = config.read_text()
    assert after.startswith("# site notes: keep me") and "# the roof inverter, keep me" in after
    assert "inv-02" not in after and after.index("inv-01") < after.index("inv-03")
    assert after.count("[[devices]]") == 2 and after.count("connection = ") == 2
    missing = runner.invoke(app, ["remove", "inv-09", "-c", str(config)])
    assert missing.exit_code == 1 and "no device named 'inv-09'" in missing.output
    assert "inv-01, inv-03" in missing.output
    for name in ("inv-01", "inv-03"):
        assert runner.invoke(app, ["remove", name, "-c", str(config)]).exit_code == 0
    assert "[[devices]]" not in config.read_text() and "[gateway]" in config.read_text()


def test_remove_refuses_a_result_that_would_be_invalid(tmp_path: Path) -> None:
    config = write_config(tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=5020, devices=2)
    # a device left behind that is already invalid makes any edit invalid: the file must stay as it was
    config.write_text(config.read_text().replace('tenant = "globex"', 'tenant = "nobody"'))
    before = config.read_text()
    result = runner.invoke(app, ["remove", "inv-01", "-c", str(config)])
    assert result.exit_code == 2 and "not removed: the configuration would be invalid" in result.output
    assert config.read_text() == before and not list(tmp_path.glob(".edge-*"))


async def test_discover_finds_sunspec_units_and_proposes_the_profile() -> None:
    port = free_port()
    async with InverterSimulator(3, port, sim_time="12:00", update_interval=3600) as sim:
        sim.set_offline(2, True)
        lines: list[str] = []
        found = await ModbusDriver().discover(
            {"host": "127.0.0.1", "port": str(port), "units": "1-4", "timeout": "0.1"}, lines.append
        )
    assert [d.connection for d in found] == [
        {"host": "127.0.0.1", "port": port, "unit_id": 1},
        {"host": "127.0.0.1", "port": port, "unit_id": 3},
    ]
    first = found[0]
    assert first.profile_name == "sunspec-inverter"
    assert first.identity["manufacturer"] == "EdgeSim" and first.identity["model"] == "PV-10K"
    assert first.identity["serial"] == "SIM00001" and first.identity["version"] == "1.0.0"
    assert first.identity["models"] == "1,103" and first.identity["sunspec_base"] == "40000"
    assert lines[-1] == "scanned 4/4 unit ids, 2 SunSpec device(s)"


def test_discover_target_errors() -> None:

    assert parse_units("1-3,9,2") == [1, 2, 3, 9]
    for bad in ("0-3", "5-2", "248", "x"):
        with pytest.raises(ValueError):
            parse_units(bad)
    result = runner.invoke(app, ["discover", "modbus", "-t", "port=1"])
    assert result.exit_code == 1 and "needs -t host=" in result.output


def test_add_takes_a_mode(tmp_path: Path) -> None:
    config = write_config(tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=5020, devices=1)
    common = ["--driver", "modbus", "--tenant", "acme", "--site", "roof", "--profile", "sunspec-inverter"]
    common += ["--connection", "host=127.0.0.1", "-c", str(config)]
    polled = runner.invoke(app, ["add", "inv-polled", *common, "--mode", "poll"])
    pushed = runner.invoke(app, ["add", "inv-pushed", *common, "--mode", "push"])
    wrong = runner.invoke(app, ["add", "inv-wrong", *common, "--mode", "sometimes"])
    assert polled.exit_code == 0 and pushed.exit_code == 0, polled.output + pushed.output
    assert wrong.exit_code == 2 and "--mode must be poll, push or auto, not 'sometimes'" in wrong.output
    text = config.read_text()
    assert text.count('mode = "poll"') == 1  # push is the default ("auto"): nothing written for it
    assert "inv-pushed" in text and "inv-wrong" not in text
    loaded, _ = load(config)
    modes = {d.name: d.mode for d in loaded.devices}
    assert (modes["inv-polled"], modes["inv-pushed"]) == ("poll", "auto")
