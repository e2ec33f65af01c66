"""A short end-to-end run of `edge bench smoke`: real gateway process, simulators, broker, subscriber.

The full benchmark is not part of the test run (docs/performance.md); this checks, in well under 30 s, that
the harness measures real behaviour: points are delivered, nothing is lost across a broker outage, the
gateway exits cleanly and every documented figure is in results.json.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from bench import run_bench
from bench.scenarios import DeviceGroup, building, building_parts, pending_reason

pytestmark = pytest.mark.timeout(90)


def test_smoke_benchmark_end_to_end(tmp_path: Path) -> None:
    started = time.monotonic()
    results = run_bench("smoke", out=tmp_path, peer=False, say=lambda _line: None)
    elapsed = time.monotonic() - started

    on_disk = orjson.loads((tmp_path / "results.json").read_bytes())
    assert on_disk["scenarios"][0]["scenario"] == "smoke"
    for key in ("cores", "python", "pymodbus", "paho-mqtt", "mosquitto", "git_commit"):
        assert on_disk["machine"][key], key

    run = results["scenarios"][0]["loads"][0]
    assert run["devices"] == 4
    assert run["offered_points_per_s"] == pytest.approx(400)
    assert run["delivered_points_per_s"] > 0.8 * 400  # a loaded CI machine may lag a little
    assert run["events"] > 0 and run["points"] == 20 * run["events"]
    assert 0 < run["p50_latency_ms"] <= run["p99_latency_ms"] < 1000
    assert run["cpu_us_per_point"] > 0
    assert 20 < run["peak_rss_mb"] < 500
    assert run["exit_code"] == 0

    loss = run["loss"]
    assert loss["devices_seen"] == 4
    assert loss["zero_loss"], loss
    assert loss["stored_events"] >= loss["acked_events"] > 0

    outage = run["outage"]
    assert outage["resumed"] and outage["backlog_events"] > 0, outage
    assert outage["drain_s"] >= 0

    assert elapsed < 30, f"the smoke benchmark took {elapsed:.1f} s"


def test_building_runs_every_protocol_and_reports_unknown_ones_as_pending() -> None:
    sc = building()
    load = sc.loads[0]
    assert {g.protocol for g in load.runnable} == {"modbus", "bacnet", "opcua"}
    assert load.pending == {}
    assert load.modules and load.cloud
    assert load.offered_points_per_s == 50 * 40  # COV and subscriptions offer what changes, not a rate
    unknown = DeviceGroup("meters", "mbus", "none", 3, 10, 1.0, "m")
    assert pending_reason(unknown) == "pending: no mbus driver yet"


def test_building_parts_adds_one_thing_per_step() -> None:
    loads = building_parts().loads
    assert [ld.label for ld in loads] == ["inverters", "+bacnet+opcua", "+modules", "+cloud"]
    assert [ld.devices for ld in loads] == [50, 105, 105, 105]
    assert [(ld.modules, ld.cloud) for ld in loads] == [
        (False, False),
        (False, False),
        (True, False),
        (True, True),
    ]
    assert replace(loads[-1], label="building") == building().loads[0]  # the last step is the building
