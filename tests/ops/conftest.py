"""Fixtures shared by the CLI and operations tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import SimulatorProcess, free_port


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorProcess]:
    """Two simulated inverters (unit ids 1 and 2) at noon, in their own process."""
    sim = SimulatorProcess(free_port(), 2, ["--sim-time", "12:00"])
    sim.start()
    yield sim
    sim.stop()
