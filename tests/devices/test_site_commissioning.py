"""Commissioning a whole site in one pass (issue 23): `edge site plan` discovers a Modbus unit-id range on many
hosts, a BACnet network, the devices behind a BACnet router and a list of OPC UA endpoints into one plan; `edge site apply` adds it all or nothing.

The 100-device site: five hosts (loopback addresses 127.0.31.1..5), twenty SunSpec inverters behind each; after
plan and apply, a real gateway publishes every device, checked by a plain paho subscriber. The timing of the
same sequence as separate processes is measured by `python -m bench.site` (docs/commissioning.md).
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import tomlkit

from edge.config import load_config
from edge.gateway import Gateway
from edge.plugins import PluginRegistry
from simulators.bacnet_hvac import HvacSimulator
from simulators.bacnet_router import RoutedSite
from simulators.modbus_inverter import InverterSimulator
from simulators.opcua_lift import LiftSimulator
from tests.helpers import MosquittoProcess, MqttRecorder, free_port, free_udp_port, run_edge, small_config

HOSTS = [f"127.0.31.{k}" for k in range(1, 6)]
PER_HOST = 20


@pytest_asyncio.fixture
async def inverter_hosts() -> AsyncIterator[int]:
    port = free_port()
    sims = [InverterSimulator(PER_HOST, port, host, sim_time="12:00", update_interval=3600) for host in HOSTS]
    for sim in sims:
        await sim.start()
    yield port
    for sim in sims:
        await sim.stop()


def modbus_scans(port: int) -> list[str]:
    return [f"--scan=modbus host={host} port={port} units=1-{PER_HOST} timeout=0.2" for host in HOSTS]


def one_scan_of_every_host(port: int) -> str:
    """The five hosts as one range: the Modbus discovery scans them concurrently."""
    return f"--scan=modbus host=127.0.31.1-5 port={port} units=1-{PER_HOST} timeout=0.2"


async def test_a_100_device_site_goes_from_nothing_to_publishing(
    tmp_path: Path, inverter_hosts: int, mosquitto: MosquittoProcess
) -> None:
    config = small_config(tmp_path, "gw-site")
    config.write_text(
        config.read_text()
        + f'[bus]\nmode = "external"\nport = {mosquitto.port}\ntopic_prefix = "site100"\n'
        + "[storage]\ncommit_interval_ms = 20\n"
    )
    plan = tmp_path / "plan.toml"
    code, out, err = await run_edge(
        "site", "plan", one_scan_of_every_host(inverter_hosts), "--tenant", "acme", "--site", "hq",
        "--name-pattern", "{site}-{host}-u{unit_id:02d}", "-o", str(plan), "--json",
    )  # fmt: skip
    assert code == 0, err
    assert "wrote a plan of 100 device(s)" in err
    entries = tomllib.loads(plan.read_text())["devices"]
    assert len(entries) == 100 and entries[0]["name"] == "hq-127.0.31.1-u01"
    assert [e["connection"]["host"] for e in entries[::PER_HOST]] == HOSTS  # in host order, then unit order
    assert entries[0]["profile"] == "sunspec-inverter" and entries[99]["identity"]["serial"] == "SIM00020"
    code, out, err = await run_edge("site", "apply", str(plan), "--config", str(config))
    assert code == 0, err
    assert "added 100 device(s)" in out

    registry = PluginRegistry.from_entry_points()
    gateway = Gateway(load_config(config, registry), registry)
    recorder = MqttRecorder(mosquitto.port, "site100/acme/events/hq/#")
    await gateway.start()
    try:
        names = {e["name"] for e in entries}
        await asyncio.to_thread(
            recorder.wait_for,
            lambda messages: names <= {t.rsplit("/", 1)[-1] for t, p, _ in messages if b"telemetry" in p},
            60.0,
        )
    finally:
        await gateway.stop()
        recorder.close()


async def test_a_plan_with_a_bad_entry_is_refused_as_a_whole_with_line_numbers(
    tmp_path: Path, inverter_hosts: int
) -> None:
    config = small_config(tmp_path, "gw-site")
    plan = tmp_path / "plan.toml"
    code, _, err = await run_edge(
        "site", "plan", modbus_scans(inverter_hosts)[0], "--tenant", "acme", "--site", "hq", "-o", str(plan),
        "--name-pattern", "inv-{unit_id}",
    )  # fmt: skip
    assert code == 0, err
    header = [n for n, line in enumerate(plan.read_text().splitlines(), 1) if line == "[[devices]]"]
    plan_doc = tomlkit.parse(plan.read_text())  # the technician's edits, each making one entry invalid
    devices = plan_doc["devices"]
    devices[1]["name"] = "inv 2/x"
    devices[3]["name"] = "inv-3"
    devices[4]["connection"]["unit_id"] = 300
    devices[5]["site"] = "roof"
    devices[6]["profile"] = "sunspec-invertr"
    plan.write_text(tomlkit.dumps(plan_doc))
    before = config.read_text()
    code, _, err = await run_edge("site", "apply", str(plan), "--config", str(config))
    assert code == 2 and config.read_text() == before
    assert "not applied: 5 problem(s); nothing was changed" in err
    assert (
        f"plan.toml: line {header[3]} (inv-3): the name 'inv-3' is also the entry at line {header[2]}" in err
    )
    assert f"plan.toml: line {header[1]} (inv 2/x).name: String should match pattern" in err
    assert (
        f"plan.toml: line {header[4]} (inv-5).connection.unit_id: Input should be less than or equal to 247"
        in err
    )
    assert f"plan.toml: line {header[5]} (inv-6).site: unknown site 'roof'" in err
    assert f"plan.toml: line {header[6]} (inv-7).profile:" in err and "sunspec-invertr" in err
    for index in (1, 3, 4, 5, 6):  # the technician fixes or drops the bad entries; then all of it applies
        del devices[index - [1, 3, 4, 5, 6].index(index)]
    plan.write_text(tomlkit.dumps(plan_doc))
    code, out, err = await run_edge("site", "apply", str(plan), "--config", str(config))
    assert code == 0 and "added 15 device(s)" in out, err
    code, _, err = await run_edge("site", "apply", str(plan), "--config", str(config))
    assert (
        code == 2
        and f"plan.toml: line {header[0]} (inv-1): a device named 'inv-1' is already configured" in err
    )


@pytest.mark.asyncio(loop_scope="function")
async def test_one_plan_covers_a_bacnet_network_opcua_endpoints_and_modbus_hosts(
    tmp_path: Path, inverter_hosts: int
) -> None:
    bacnet = HvacSimulator(2, "127.0.32.10", free_udp_port("127.0.32.10"), update_interval=3600)
    routed = RoutedSite(free_udp_port(), devices=2)
    lifts = [LiftSimulator(free_port(), 1, auto=False), LiftSimulator(free_port(), 1, auto=False)]
    await bacnet.start()
    await routed.start()
    for lift in lifts:
        await lift.start()
    try:
        local = f"127.0.0.1/8:{free_udp_port()}"
        code, out, err = await run_edge(
            "site", "plan", "--tenant", "acme", "--site", "hq", "-o", str(tmp_path / "plan.toml"), "--json",
            f"--scan=bacnet network=127.255.255.255 port={bacnet.ahu.port} local={local} points=true timeout=1",
            f"--scan=bacnet router={routed.router_address} local={local} points=true timeout=1",
            *(f"--scan=opcua url={lift.url} security=None depth=2" for lift in lifts),
            modbus_scans(inverter_hosts)[0].replace(f"units=1-{PER_HOST}", "units=1-2"),
            "--name-pattern", "{driver}-{n:02d}",
        )  # fmt: skip
        assert code == 0, err
        entries = tomllib.loads((tmp_path / "plan.toml").read_text())["devices"]
        drivers = [e["driver"] for e in entries]
        assert drivers == ["bacnet"] * 5 + ["opcua"] * 2 + ["modbus"] * 2
        assert [e["name"] for e in entries][5:7] == ["opcua-06", "opcua-07"]
        assert [e["connection"].get("network") for e in entries[3:5]] == [2, 2]  # behind the router
        vavs = [e for e in entries if e.get("identity", {}).get("model") == "sim-vav"]
        assert len(vavs) == 2 and vavs[0]["profile"] == vavs[1]["profile"]  # one proposed map for one model
        assert all(e["connection"]["local_address"] == local for e in entries[:3])
        config = small_config(tmp_path, "gw-mixed")
        code, out, err = await run_edge("site", "apply", str(tmp_path / "plan.toml"), "--config", str(config))
        assert code == 0, err
        for name in ("bacnet-02", "bacnet-05"):  # a VAV box on the IP network; a controller behind the router
            code, out, err = await run_edge("device", "test", name, "--config", str(config))
            assert code == 0, out + err
    finally:
        for lift in lifts:
            await lift.stop()
        await routed.stop()
        await bacnet.stop()
