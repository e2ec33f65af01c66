"""A tiny `edge bench scale`: the same harness and stacks as the measurement of docs/scale.md, small and short.

Two devices, twice per stack, the stacks taking turns: each run's gateway really used the stack it names (its
configuration, the server whose CPU is charged), every stack delivers with zero loss and a p50 latency, and
each server's CPU per point is reported where that server exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.harness import BenchEnv, run_scenario
from bench.procs import BenchBroker, Children
from bench.report import table
from bench.scenarios import SCALE_BACKENDS, DeviceGroup, scale

pytestmark = pytest.mark.timeout(240)

_TINY = DeviceGroup("bank", "modbus", "bank", 2, 10, 0.2, "dev", per_process=2)


def test_scale_scenario_runs_every_stack_alternately(tmp_path: Path) -> None:
    said: list[str] = []
    sc = scale(groups=(("tiny", _TINY),), warmup=1.0, duration=2.0)
    with Children() as children:
        broker = BenchBroker(tmp_path / "broker", children)
        broker.start()
        env = BenchEnv(out=tmp_path, children=children, broker=broker, repeat=2, say=said.append)
        try:
            result = run_scenario(sc, env)
        finally:
            if env.postgres is not None:
                env.postgres.stop("fast")

    labels = [f"tiny-{stack}" for stack, _, _ in SCALE_BACKENDS]
    assert [entry["load"] for entry in result["loads"]] == labels
    started = [line.split(":")[0].strip() for line in said if ": run " in line]
    assert started == [f"scale / {label}" for label in labels] * 2  # run 1 of each stack, then run 2 of each

    for entry, (stack, storage, bus) in zip(result["loads"], SCALE_BACKENDS, strict=True):
        assert (entry["storage"], entry["bus"], entry["repeats"]) == (storage, bus, 2), stack
        assert entry["loss"]["zero_loss"] and entry["loss"]["acked_events"] > 0, (stack, entry["loss"])
        assert entry["delivered_points_per_s"] > 0.8 * 100, stack
        assert 0 < entry["p50_latency_ms"] <= entry["p99_latency_ms"] < 1000, stack
        assert entry["cpu_us_per_point"] > 0, stack
        assert entry["broker_cpu_us_per_point"] >= 0, stack  # a tick of 10 ms may not pass in a tiny run
        assert (entry["database_cpu_us_per_point"] is not None) == (storage == "postgresql"), stack
        assert entry["exit_code"] == 0, stack
        config = (tmp_path / "scale" / entry["load"] / "run-1" / "edge.toml").read_text()
        assert ('backend = "postgresql"' in config) == (storage == "postgresql"), stack
        assert ('mode = "nats"' in config) == (bus == "nats"), stack

    text = table({"scenarios": [result]})
    assert "scale tiny-postgresql-nats: nats-server" in text and "PostgreSQL" in text
