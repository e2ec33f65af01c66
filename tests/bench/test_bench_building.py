"""A tiny building through the real harness: Modbus, BACnet (COV and polled), OPC UA, modules, cloud sync.

One of each device kind and a short window: it checks that every protocol's simulator starts, that the
gateway configured by the bench brings every device up, that the figures per protocol and sample -> cloud
are measured, and that nothing is lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.harness import BenchEnv, run_scenario
from bench.procs import BenchBroker, Children
from bench.report import markdown, table
from bench.scenarios import DeviceGroup, Load, Scenario

pytestmark = pytest.mark.timeout(120)


def test_a_tiny_building_measures_every_protocol_and_the_cloud(tmp_path: Path) -> None:
    groups = (
        DeviceGroup("inverters", "modbus", "sunspec", 2, 40, 0.5, "inv", per_process=2),
        DeviceGroup("air handlers", "bacnet", "hvac-ahu", 1, 30, 0.5, "ahu", on_change=True),
        DeviceGroup("VAV boxes", "bacnet", "hvac-vav", 1, 8, 0.5, "vav", on_change=True),
        DeviceGroup("lifts", "opcua", "lift", 2, 12, 0.5, "lift", on_change=True),
    )
    load = Load("building", groups, modules=True, cloud=True)
    sc = Scenario("building", "tiny building", (load,), warmup=0.5, duration=2.0)
    with Children() as children:
        broker = BenchBroker(tmp_path / "broker", children)
        broker.start()
        env = BenchEnv(out=tmp_path, children=children, broker=broker, say=lambda _line: None)
        result = run_scenario(sc, env)["loads"][0]

    assert result["devices"] == 6 and result["exit_code"] == 0, result["verdict"]
    assert result["loss"]["zero_loss"], result["loss"]
    assert result["loss"]["devices_seen"] == 6, result["loss"]  # every device published, BACnet's included
    protocols = result["by_protocol"]
    # COV and subscriptions may stay quiet within 2 s (every device published: devices_seen above)
    assert "modbus" in protocols and set(protocols) <= {"modbus", "bacnet", "opcua"}, protocols
    assert protocols["modbus"]["offered_points_per_s"] == pytest.approx(160)
    assert protocols["modbus"]["delivered_points_per_s"] > 0.8 * 160, protocols
    for changed in set(protocols) - {"modbus"}:
        assert protocols[changed]["offered_points_per_s"] is None  # they offer what changes
    cloud = result["cloud"]
    assert cloud["events_sampled"] > 0, cloud
    assert cloud["events_in_cloud"] >= 0.8 * cloud["events_sampled"], cloud
    assert 0 < cloud["p50_latency_ms"] <= cloud["p99_latency_ms"] < 10_000, cloud
    results = {"machine": {}, "repeat": 1, "scenarios": [{"scenario": "building", "loads": [result]}]}
    assert "building: modbus: 2 devices, 160 points/s offered (polled)" in table(results)
    assert "sample -> cloud p50" in markdown(results)
