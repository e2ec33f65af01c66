"""The loop probe (`edge run --loop-probe`): a stall is seen, timed, and blamed on what ran in it."""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from edge.ops.loopprobe import LoopProbe
from edge.ops.status import status_file
from tests.e2e import write_config
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port, wait_until


async def _hog(seconds: float) -> None:
    time.sleep(seconds)  # noqa: ASYNC251 (on purpose: a callback that holds the loop)


async def test_a_stall_names_the_task_and_line_that_held_the_loop(tmp_path: Path) -> None:
    probe = LoopProbe(interval=0.005, threshold=0.02)
    original = asyncio.Handle._run
    probe.start()
    try:
        await asyncio.sleep(0.05)
        await asyncio.create_task(_hog(0.12))
        await asyncio.sleep(0.05)
    finally:
        probe.stop()
    assert asyncio.Handle._run is original  # the timer is gone with the probe
    stall = max(probe.stalls, key=lambda s: s["late_ms"])
    assert 100 <= stall["late_ms"] < 1000
    assert stall["cpu_ms"] < stall["late_ms"] / 2  # a sleeping callback holds the loop without computing
    top = stall["ran"][0]
    assert top["what"].endswith("_hog") and top["ms"] >= 100
    assert any("test_loopprobe.py" in stack and "_hog" in stack for stack, _ in stall["stacks"])
    probe.write(tmp_path / "probe.json")
    report = orjson.loads((tmp_path / "probe.json").read_bytes())
    assert report["stalls"] and report["callbacks"] > 10


async def test_a_collection_inside_a_stall_is_counted_by_generation() -> None:
    probe = LoopProbe(interval=0.005, threshold=0.005, stacks=False)
    garbage = [[i, str(i)] for i in range(300_000)]  # live objects a full collection must visit
    probe.start()
    try:
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        gc.collect()
        took = time.perf_counter() - started
        await asyncio.sleep(0.02)
    finally:
        probe.stop()
    assert len(garbage) == 300_000
    assert probe.gc_totals[2][0] >= 1 and probe.gc_totals[2][1] > 0
    if took >= 0.01:  # only then a stall must show it (a fast machine may collect under the threshold)
        assert any(s["gc_ms"].get("2", 0) >= took * 1000 * 0.5 for s in probe.stalls)


async def test_a_quiet_loop_has_no_stalls() -> None:
    probe = LoopProbe(interval=0.005, threshold=0.25, stacks=False)
    probe.start()
    try:
        for _ in range(20):
            await asyncio.sleep(0.005)
    finally:
        probe.stop()
    assert probe.stalls == []
    assert probe.callbacks >= 20


async def _spin(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


async def test_a_computing_stall_shows_its_cpu_or_its_wait_for_a_core() -> None:
    probe = LoopProbe(interval=0.005, threshold=0.02, stacks=False)
    probe.start()
    try:
        await asyncio.sleep(0.02)
        await asyncio.create_task(_spin(0.1))
        await asyncio.sleep(0.02)
    finally:
        probe.stop()
    stall = max(probe.stalls, key=lambda s: s["late_ms"])
    assert stall["ran"][0]["what"].endswith("_spin")
    # computed, or ready to compute but preempted by the machine's other processes: together, nearly all of it
    assert stall["cpu_ms"] + stall["no_core_ms"] >= 0.8 * stall["late_ms"]


async def test_the_loop_time_is_added_up_per_second_and_name() -> None:
    probe = LoopProbe(interval=0.005, threshold=0.5, stacks=False)
    probe.start()
    try:
        for _ in range(3):
            await asyncio.create_task(_spin(0.01))
    finally:
        probe.stop()
    seconds = probe.report()["seconds"]
    spun = [
        took for names in seconds.values() for what, (_, took, *_) in names.items() if what.endswith("_spin")
    ]
    assert 25 <= sum(spun) < 500  # three spins of 10 ms, in milliseconds


def test_edge_run_with_the_probe_writes_its_report_and_freezes_the_startup_heap(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    """As deployed: `edge run --loop-probe FILE`, stopped with SIGTERM, leaves the report; the heap alive after
    the start is frozen, so the collector's full passes visit only what came later."""
    sim = SimulatorProcess(free_port(), 2, ["--sim-time", "12:00"])
    sim.start()
    config = write_config(tmp_path / "edge.toml", mqtt_port=mosquitto.port, modbus_port=sim.port, devices=2)
    config.write_text(config.read_text().replace('id = "gw-test"', 'id = "gw-loop-probe"'))
    report, log = tmp_path / "probe.json", tmp_path / "gateway.log"
    with log.open("wb") as sink:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "-c", str(config), "--loop-probe", str(report)],
            cwd=tmp_path,
            stderr=sink,
        )
    try:
        wait_until(lambda: status_file(tmp_path / "data").exists(), 60.0, "the gateway's status file")
        time.sleep(2.0)  # a few polls and status rounds
    finally:
        gateway.send_signal(signal.SIGTERM)
        code = gateway.wait(30)
        sim.stop()
    assert code == 0, log.read_text()[-2000:]
    probe = orjson.loads(report.read_bytes())
    assert probe["callbacks"] > 100 and probe["seconds"]
    assert any(what.startswith("task poll-") for names in probe["seconds"].values() for what in names)
    frozen = probe["gc_objects"]["frozen"]
    assert frozen > 50_000 and probe["gc_objects"]["tracked"] < frozen  # most of the heap is frozen
    assert "froze the" in log.read_text()
