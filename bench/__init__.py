"""`edge bench`: end-to-end benchmarks of the real gateway process against protocol simulators.

Public API: `run_bench` (what the CLI calls), the scenario model (`bench.scenarios`), and `measure` for one
load. The subscriber (`python -m bench.subscriber`) and the simulators run as separate processes. Method and
latest figures: docs/performance.md. Imports are lazy, so `python -m bench.subscriber` and
`python -m bench.report` load only what they need.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BenchEnv", "DeviceGroup", "Load", "Scenario", "measure", "run_bench", "run_scenario"]

_HOMES = {
    "run_bench": "bench.cli",
    "BenchEnv": "bench.harness",
    "measure": "bench.harness",
    "run_scenario": "bench.harness",
    "DeviceGroup": "bench.scenarios",
    "Load": "bench.scenarios",
    "Scenario": "bench.scenarios",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
