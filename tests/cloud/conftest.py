"""Fixtures the cloud tests share: a Modbus simulator serving the test configuration's inverters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import SimulatorProcess, free_port

DEVICES = 4


@pytest.fixture(scope="module")
def modbus() -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(free_port(), DEVICES, ["--sim-time", "12:00"])
    sim.start()
    yield sim
    sim.stop()
