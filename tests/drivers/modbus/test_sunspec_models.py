"""Every SunSpec model pysunspec2's library defines, and controls with their enable registers (issue 23).

The SunSpec simulator lays each model out from the same definitions (read as data, by its own code); one unit
per model. Discovery must map every one of them to points the driver accepts. Then a storage system (models
124 and 802), a DER (701 + 704) and an inverter's controls (123) are read and controlled through a real gateway
with the generated maps: each write goes through MQTT `/set`, lands in the simulator's registers with its scale
factor, and is followed by its enable register where the definitions pair one (WMaxLim_Ena, WMaxLimPctEna).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest_asyncio

from drivers.modbus import ModbusDriver, ModbusPoint
from edge.config import load_config
from edge.devices.commissioning import write_profile
from edge.gateway import Gateway
from edge.plugins import PluginRegistry
from simulators.sunspec_device import SunSpecSimulator, models_dir
from tests.helpers import MosquittoProcess, MqttRecorder, free_port

LIBRARY = sorted(
    int(match[1])
    for path in models_dir().iterdir()
    if (match := re.fullmatch(r"model_(\d+)\.json", path.name))
)
# 16-byte addresses (no driver type holds one) and strings longer than one read request are left out
LEFT_OUT = re.compile(r"type ipv6addr not mapped|longer than one read, left out")


async def test_every_model_of_the_library_is_discovered_and_mapped() -> None:
    chains = {unit: (1, model) for unit, model in enumerate((m for m in LIBRARY if m != 1), 1)}
    assert len(chains) > 100  # inverters 1xx, meters 2xx, DER 7xx, storage 8xx and the rest
    async with SunSpecSimulator(free_port(), chains) as sim:
        found = await ModbusDriver().discover(
            {"host": "127.0.0.1", "port": sim.port, "units": f"1-{len(chains)}", "timeout": 0.5},
            lambda _: None,
        )
    assert [d.identity["models"] for d in found] == [f"1,{model}" for _, model in chains.values()]
    for device in found:
        notes = [n for n in device.identity.get("note", "").split("; ") if n]
        assert all(LEFT_OUT.search(n) for n in notes), (device.identity["models"], notes)
        points = [ModbusPoint.model_validate(p) for p in device.points]  # as a profile loads them
        model = int(device.identity["models"].split(",")[1])
        own = [p for p in points if not p.name.startswith("common.")]
        assert own or not _fixed_points(model), f"model {model} has no point of its own"


def _fixed_points(model: int) -> bool:
    """Whether the definition has points outside repeating groups (302-304 are one repeating group, sized by
    the model's length: the simulator serves none of it)."""
    group = orjson.loads((models_dir() / f"model_{model}.json").read_bytes())["group"]
    fixed = [p for p in group["points"] if p["name"] not in ("ID", "L")]
    return bool(fixed or any("count" not in g for g in group.get("groups", [])))


def _chains() -> dict[int, tuple[int, ...]]:
    return {1: (1, 103, 123, 124), 2: (1, 701, 704), 3: (1, 802)}


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[SunSpecSimulator]:
    async with SunSpecSimulator(free_port(), _chains()) as simulator:
        yield simulator


async def test_storage_der_and_inverter_controls_through_a_gateway(
    sim: SunSpecSimulator, tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    found = await ModbusDriver().discover(
        {"host": "127.0.0.1", "port": sim.port, "units": "1-3", "timeout": 0.3}, lambda _: None
    )
    names = ("inv-1", "der-2", "bat-3")
    lines = [
        '[gateway]\nid = "gw-storage"\ndata_dir = "data"',
        f'[bus]\nmode = "external"\nport = {mosquitto.port}\ntopic_prefix = "storage"\npoint_min_interval = 0.0',
        "[storage]\ncommit_interval_ms = 5",
        '[[tenants]]\nid = "acme"\n[[sites]]\nid = "roof"',
    ]
    for name, device in zip(names, found, strict=True):
        profile = write_profile(tmp_path / "profiles", "modbus", device)
        connection = ", ".join(f"{k} = {orjson.dumps(v).decode()}" for k, v in device.connection.items())
        lines.append(
            f'[[devices]]\nname = "{name}"\ndriver = "modbus"\ntenant = "acme"\nsite = "roof"\n'
            f'profile = "{profile}"\npoll_interval = 0.2\ntimeout = 0.5\nconnection = {{ {connection} }}'
        )
    config = tmp_path / "edge.toml"
    config.write_text("\n".join(lines) + "\n")
    registry = PluginRegistry.from_entry_points()
    gateway = Gateway(load_config(config, registry), registry)
    recorder = MqttRecorder(mosquitto.port, "storage/#")
    writes = {  # (device, point, value written in engineering units)
        ("inv-1", "controls.WMaxLimPct", 60),
        ("inv-1", "storage_basic.StorCtl_Mod", 1),  # CHARGE
        ("inv-1", "storage_basic.InWRte", 50),
        ("inv-1", "storage_basic.WChaMax", 5000),
        ("der-2", "DERCtlAC.WMaxLimPct", 70),
        ("bat-3", "battery.SetOp", "DISCONNECT"),
    }
    await gateway.start()
    try:
        got = await asyncio.to_thread(recorder.wait_for, lambda m: all(telemetry(m, n) for n in names), 10)
        for device, point, value in writes:
            body = orjson.dumps({"value": value, "id": f"{device}-{point}"})
            recorder.publish(f"storage/acme/cmd/roof/{device}/{point}/set", body)
        answered = await asyncio.to_thread(recorder.wait_for, lambda m: len(results(m)) >= len(writes), 10)
    finally:
        await gateway.stop()
        recorder.close()
    storage, battery = telemetry(got, "inv-1")[-1], telemetry(got, "bat-3")[-1]
    for sample in (
        storage["storage_basic.ChaState"],
        storage["storage_basic.WChaMax"],
        battery["battery.SoC"],
    ):
        assert sample["quality"] == "good" and isinstance(sample["value"], int | float), sample
    assert battery["battery.SetOp"]["value"] in ("CONNECT", "DISCONNECT")
    assert {r["request_id"]: (r["ok"], r["reason"]) for r in results(answered)} == {
        f"{device}-{point}": (True, None) for device, point, _ in writes
    }
    assert (sim.value(1, "123.WMaxLimPct"), sim.value(1, "123.WMaxLim_Ena")) == (60, 1)  # and enabled
    assert (sim.value(1, "124.StorCtl_Mod"), sim.value(1, "124.InWRte"), sim.value(1, "124.WChaMax")) == (
        1,
        50,
        5000,
    )
    assert (sim.value(2, "704.WMaxLimPct"), sim.value(2, "704.WMaxLimPctEna")) == (70, 1)
    assert sim.value(3, "802.SetOp") == 2


def telemetry(messages: list[tuple[str, bytes, bool]], device: str) -> list[dict[str, dict[str, object]]]:
    return [
        orjson.loads(p)["data"]["points"]
        for t, p, _ in messages
        if t.endswith(f"/events/roof/{device}") and b"org.edgegw.telemetry" in p
    ]


def results(messages: list[tuple[str, bytes, bool]]) -> list[dict[str, object]]:
    return [orjson.loads(p) for t, p, _ in messages if t.endswith("/result")]
