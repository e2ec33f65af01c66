"""SunSpec discovery generates a point map for every model of a device's chain (issue 21, item 12).

The devices are the SunSpec simulator's, built from the official model definitions: an inverter whose common
model has the standard length (66 registers with its Pad) followed by models 103, 120 and 123, and a DER with
models 1 and 701. The proposed profiles are written as `edge device discover --save-profiles` writes them, then
a real gateway polls the devices with them and a plain paho subscriber checks the values, and a write.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest_asyncio
from typer.testing import CliRunner

from drivers.modbus import ModbusDriver
from edge.cli import app as edge_app
from edge.config import load_config
from edge.config.loader import parse_profile
from edge.devices.commissioning import write_profile
from edge.gateway import Gateway
from edge.plugins import PluginRegistry
from edge.sdk.drivers import DiscoveredDevice
from edge.sdk.errors import ConfigIssue
from simulators.sunspec_device import SunSpecSimulator
from tests.helpers import MosquittoProcess, MqttRecorder, free_port

INVERTER = (1, 103, 120, 123)
DER = (1, 701)
Messages = list[tuple[str, bytes, bool]]


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[SunSpecSimulator]:
    async with SunSpecSimulator(free_port(), {1: INVERTER, 2: DER}, unimplemented=["103.VAr"]) as simulator:
        yield simulator


async def discover(sim: SunSpecSimulator) -> list[DiscoveredDevice]:
    lines: list[str] = []
    return await ModbusDriver().discover(
        {"host": "127.0.0.1", "port": str(sim.port), "units": "1-3", "timeout": "0.2"}, lines.append
    )


async def test_every_model_of_a_standard_chain_gets_points_with_scale_factors_units_and_writes(
    sim: SunSpecSimulator, tmp_path: Path
) -> None:
    inverter, der = await discover(sim)
    assert inverter.identity["models"] == "1,103,120,123" and der.identity["models"] == "1,701"
    assert inverter.profile_name == "sunspec-edgesim-sunspecsim-103-120-123"
    points = {p["name"]: p for p in inverter.points}
    assert points["inverter_three_phase.W"] == {
        "name": "inverter_three_phase.W",
        "table": "holding",
        "address": sim.address(1, "103.W"),  # 40084: after a 66-register common model
        "type": "int16",
        "unit": "W",
        "scale_factor": "inverter_three_phase.W_SF",
        "sunspec": True,
        "description": "Watts: AC Power",
        "brick": "Active_Power_Sensor",  # proposed from the model point's units and role
        "haystack": ["point", "elec", "power", "sensor"],
    }
    assert points["inverter_three_phase.DCV"]["haystack"] == ["point", "elec", "dc", "volt", "sensor"]
    assert points["inverter_three_phase.Hz"]["brick"] == "Frequency_Sensor"
    assert points["inverter_three_phase.WH"]["brick"] == "Energy_Sensor"
    assert "brick" not in points["inverter_three_phase.St"] and "brick" not in points["controls.WMaxLimPct"]
    assert (
        points["inverter_three_phase.W_SF"]["type"] == "sunssf"
        and points["inverter_three_phase.W_SF"]["publish"] is False
    )
    assert (
        points["inverter_three_phase.WH"]["type"] == "acc32"
        and points["inverter_three_phase.TmpCab"]["unit"] == "Cel"
    )
    assert points["inverter_three_phase.St"]["labels"]["4"] == "MPPT"
    assert (points["common.SN"]["type"], points["common.SN"]["length"]) == ("string", 16)
    assert points["controls.WMaxLimPct"]["writable"] is True  # access RW in model 123
    assert points["controls.WMaxLimPct"]["scale_factor"] == "controls.WMaxLimPct_SF"
    assert "writable" not in points["inverter_three_phase.W"] and "writable" not in points["nameplate.WRtg"]
    assert not any(name.endswith((".ID", ".L", ".Pad")) for name in points)
    der_points = {p["name"]: p for p in der.points}
    assert der_points["DERMeasureAC.Hz"]["type"] == "uint32"
    assert der_points["DERMeasureAC.TotWhInj"]["scale_factor"] == "DERMeasureAC.TotWh_SF"
    for device in (inverter, der):  # the proposal, saved as `--save-profiles` does, is a valid point map
        path = write_profile(tmp_path, "modbus", device)
        issues: list[ConfigIssue] = []
        loaded = parse_profile(tomllib.loads(path.read_text()), str(path), ModbusDriver(), "modbus", issues)
        assert issues == [] and loaded is not None and len(loaded) == len(device.points)


async def test_the_generated_profiles_read_good_values_through_a_gateway(
    sim: SunSpecSimulator, tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    found = await discover(sim)
    profiles = [write_profile(tmp_path / "profiles", "modbus", device) for device in found]
    config = tmp_path / "edge.toml"
    lines = [
        '[gateway]\nid = "gw-sunspec"\ndata_dir = "data"',
        f'[bus]\nmode = "external"\nport = {mosquitto.port}\ntopic_prefix = "sunspec"\npoint_min_interval = 0.0',
        "[storage]\ncommit_interval_ms = 5",
        '[[tenants]]\nid = "acme"\n[[sites]]\nid = "roof"',
    ]
    for name, device, profile in zip(("inv-1", "der-2"), found, profiles, strict=True):
        connection = ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in device.connection.items())
        lines.append(
            f'[[devices]]\nname = "{name}"\ndriver = "modbus"\ntenant = "acme"\nsite = "roof"\n'
            f'profile = "{profile}"\npoll_interval = 0.2\ntimeout = 0.5\nconnection = {{ {connection} }}'
        )
    config.write_text("\n".join(lines) + "\n")
    registry = PluginRegistry.from_entry_points()
    gateway = Gateway(load_config(config, registry), registry)
    recorder = MqttRecorder(mosquitto.port, "sunspec/#")
    await gateway.start()
    try:
        got = await asyncio.to_thread(
            recorder.wait_for, lambda m: telemetry(m, "inv-1") and telemetry(m, "der-2"), 10
        )
        inverter, der = telemetry(got, "inv-1")[-1], telemetry(got, "der-2")[-1]
        base = "sunspec/acme/cmd/roof/inv-1/controls.WMaxLimPct"
        recorder.publish(f"{base}/set", b'{"value": 60, "id": "limit"}')
        answered = await asyncio.to_thread(recorder.wait_for, lambda m: results(m, base), 10)
    finally:
        await gateway.stop()
        recorder.close()
    expected = {
        "inverter_three_phase.W": (7421, "W"), "inverter_three_phase.A": (32.1, "A"), "inverter_three_phase.PhVphA": (230.1, "V"),
        "inverter_three_phase.Hz": (50.01, "Hz"), "inverter_three_phase.VA": (7480, "VA"), "inverter_three_phase.PF": (99.2, "%"),
        "inverter_three_phase.WH": (1234567, "Wh"), "inverter_three_phase.DCV": (601.3, "V"), "inverter_three_phase.TmpCab": (35.2, "Cel"),
        "inverter_three_phase.St": ("MPPT", None), "nameplate.WRtg": (10000, "W"), "controls.WMaxLimPct": (100, "% WMax"),
        "common.Mn": ("EdgeSim", None), "common.SN": ("SS00001", None),
    }  # fmt: skip
    for name, (value, unit) in expected.items():
        sample = inverter[name]
        assert (sample["value"], sample["quality"]) == (value, "good"), (name, sample)
        assert sample["unit"] == unit, (name, sample)
    assert inverter["inverter_three_phase.VAr"] == inverter["inverter_three_phase.VAr"] | {
        "quality": "bad",
        "value": None,
    }
    assert "not implemented" in inverter["inverter_three_phase.VAr"]["reason"]
    bad = [
        name for name, s in inverter.items() if s["quality"] != "good" and name != "inverter_three_phase.VAr"
    ]
    assert bad == []
    assert {n: s for n, s in der.items() if s["quality"] != "good"} == {}
    assert (der["DERMeasureAC.Hz"]["value"], der["DERMeasureAC.InvSt"]["value"]) == (50.01, "RUNNING")
    assert der["DERMeasureAC.TotWhInj"]["value"] == 1234567
    assert results(answered, base)[0]["ok"] is True
    assert sim.value(1, "123.WMaxLimPct") == 60  # written through the generated map, scale factor applied


def telemetry(messages: Messages, device: str) -> list[dict[str, Any]]:
    out = []
    for topic, payload, _ in messages:
        if topic.endswith(f"/events/roof/{device}"):
            event = orjson.loads(payload)
            if event["type"] == "org.edgegw.telemetry":
                out.append(event["data"]["points"])
    return out


def results(messages: Messages, base: str) -> list[dict[str, Any]]:
    return [orjson.loads(p) for t, p, _ in messages if t == f"{base}/result"]


async def test_saved_profiles_are_one_per_point_map_and_never_replace_a_reviewed_one(tmp_path: Path) -> None:
    """The trial of 2026-12-07: `edge device discover --save-profiles` wrote each device's proposal over the file
    of the same name, so a second run replaced a profile the user had reviewed and edited."""
    folder = tmp_path / "profiles"
    async with SunSpecSimulator(free_port(), {1: INVERTER, 2: INVERTER, 3: DER}) as sim:
        args = ["device", "discover", "modbus", "-t", "host=127.0.0.1", "-t", f"port={sim.port}"]
        args += ["-t", "units=1-3", "-t", "timeout=0.2", "--save-profiles", str(folder)]
        first = await asyncio.to_thread(CliRunner().invoke, edge_app, args)
        assert first.exit_code == 0, first.output
        files = sorted(p.name for p in folder.iterdir())
        assert files == ["sunspec-edgesim-sunspecsim-103-120-123.toml", "sunspec-edgesim-sunspecsim-701.toml"]
        inverter = folder / files[0]
        reviewed = inverter.read_text().replace('name = "inverter_three_phase.W"', 'name = "ac_power"')
        inverter.write_text(reviewed)
        der = (folder / files[1]).read_text()
        again = await asyncio.to_thread(CliRunner().invoke, edge_app, args)
    assert again.exit_code == 0, again.output
    assert inverter.read_text() == reviewed  # the user's edit stays
    assert (folder / "sunspec-edgesim-sunspecsim-103-120-123-2.toml").exists()  # the proposal beside it
    assert (folder / files[1]).read_text() == der  # the same points as before: the file is left alone
    assert len(list(folder.iterdir())) == 3
    assert f"{inverter} holds other points (reviewed?): kept" in again.output
