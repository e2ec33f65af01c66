"""The compare scenario's whole code path (harness, table, Markdown, plot) on a tiny load, peers off.

`edge bench compare --no-peer` once measured everything and then ended in `KeyError: 'ours'` in the report:
a comparison must keep its shape (`ours`, `peers`) whether its peers ran or not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.harness import BenchEnv, run_scenario
from bench.peer_common import PEERS
from bench.procs import BenchBroker, Children
from bench.report import markdown, plot, table
from bench.scenarios import DeviceGroup, Load, Scenario, compare

pytestmark = pytest.mark.timeout(90)


def _tiny_compare() -> Scenario:
    group = DeviceGroup("bank", "modbus", "bank", 2, 10, 0.2, "dev", per_process=2)
    return Scenario(
        name="compare",
        description="2 Modbus devices x 10 registers at 0.2 s, peers off",
        loads=(Load("2x10@0.2s", (group,)),),
        warmup=0.5,
        duration=1.0,
        peers=("thingsboard-memory", "node-red"),
    ).with_options(peer=False)


def test_compare_without_peers_reports_our_figures(tmp_path: Path) -> None:
    with Children() as children:
        broker = BenchBroker(tmp_path / "broker", children)
        broker.start()
        env = BenchEnv(out=tmp_path, children=children, broker=broker, say=lambda _line: None)
        scenario = run_scenario(_tiny_compare(), env)
    results = {"machine": {"cores": 2}, "repeat": 1, "scenarios": [scenario]}

    entry = scenario["loads"][0]
    assert entry["peers"] == []
    assert entry["ours"]["delivered_points_per_s"] > 0
    assert entry["ours"]["loss"]["zero_loss"]
    assert "peers not run (--no-peer): ThingsBoard memory, Node-RED" in scenario["notes"]
    text = table(results)
    assert "compare 2x10@0.2s" in text
    assert "compare 2x10@0.2s: edge-gateway" in markdown(results)
    assert plot(results, tmp_path / "bench.png") == tmp_path / "bench.png"


def test_the_compare_scenario_names_known_peers() -> None:
    sc = compare()
    assert set(sc.peers) == {"thingsboard-memory", "thingsboard-sqlite", "node-red"}
    assert all(name in PEERS for name in sc.peers)
    assert sc.with_options(peer=False).peer is False
