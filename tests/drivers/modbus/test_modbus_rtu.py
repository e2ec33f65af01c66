"""Modbus RTU end to end: the driver and the inverter simulator on the two ends of a socat pty pair.

A pty does not emulate baud-rate timing, and refuses parity settings (so the line runs 8N1 here), so this checks framing, the shared line (one client, one lock, one
request at a time for several unit ids) and reference counting, not timing; the timing figures are unit-tested.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.modbus import ModbusConnection, ModbusDriver, ModbusPoint
from drivers.modbus.lines import inter_frame_gap, line_timeout
from edge.sdk.drivers import DeviceSpec
from edge.sdk.errors import DeviceUnreachable
from simulators.modbus_inverter import InverterSimulator
from tests.helpers import wait_until

SOCAT = shutil.which("socat")


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    if SOCAT is None:
        pytest.skip("socat is not installed (scripts/setup.sh installs it): no virtual serial pair")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    process = subprocess.Popen(
        [SOCAT, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: (a.exists() and b.exists()) or process.poll() is not None,
            5,
            "socat's pty pair",
            step=0.01,
        )
        assert process.poll() is None, "socat exited before creating the pty pair"
        yield str(a), str(b)
    finally:
        process.terminate()
        process.wait(timeout=5)


@pytest.fixture
async def rtu_sim(pty_pair: tuple[str, str]) -> AsyncIterator[tuple[InverterSimulator, str]]:
    sim = InverterSimulator(3, 0, rtu=pty_pair[0], sim_time="12:00", update_interval=3600)
    await sim.start()
    yield sim, pty_pair[1]
    await sim.stop()


POINTS = (
    ModbusPoint(name="manufacturer", address=40004, type="string", length=16),
    ModbusPoint(name="serial", address=40052, type="string", length=16),
    ModbusPoint(name="model_id", address=40069),
    ModbusPoint(name="w_sf", address=40084, type="sunssf", sunspec=True),
    ModbusPoint(name="energy", address=40093, type="acc32", sunspec=True),
)


def rtu_spec(port: str, unit: int, timeout: float = 0.3, **line: Any) -> DeviceSpec:
    return DeviceSpec(
        name=f"inv-{unit}",
        tenant="t",
        site="s",
        driver="modbus",
        connection=ModbusConnection(transport="rtu", port=port, unit_id=unit, **({"parity": "N"} | line)),
        points=POINTS,
        poll_interval=1.0,
        timeout=timeout,
        profile="test",
    )


async def test_three_units_share_one_line(rtu_sim: tuple[InverterSimulator, str]) -> None:
    sim, port = rtu_sim
    driver = ModbusDriver()
    specs = [rtu_spec(port, unit) for unit in (1, 2, 3)]
    sessions = [driver.session(s) for s in specs]
    try:
        for session in sessions:
            await session.connect()
        assert len(driver.lines) == 1
        plan = driver.compile(specs[0])
        for _ in range(3):  # concurrent polls take turns on the line
            results = await asyncio.gather(*(s.read(plan) for s in sessions))
            for unit, values in zip((1, 2, 3), results, strict=True):
                assert values[:4] == ["EdgeSim", f"SIM{unit:05d}", 103, 0]
                assert values[4] == round(sim.state(unit).energy_wh)
        await sessions[0].close()
        assert len(driver.lines) == 1 and sessions[1].connected
        assert (await sessions[1].read(plan))[2] == 103
    finally:
        for session in sessions:
            await session.close()
    assert len(driver.lines) == 0


async def test_absent_unit_is_unreachable_and_others_still_answer(
    rtu_sim: tuple[InverterSimulator, str],
) -> None:
    _, port = rtu_sim
    driver = ModbusDriver()
    present, absent = driver.session(rtu_spec(port, 1)), driver.session(rtu_spec(port, 9, timeout=0.1))
    try:
        await present.connect()
        await absent.connect()
        plan = driver.compile(rtu_spec(port, 1))
        with pytest.raises(DeviceUnreachable, match="no request answered"):
            await absent.read(plan)
        assert (await present.read(plan))[2] == 103
    finally:
        await present.close()
        await absent.close()


async def test_a_silent_unit_never_closes_the_shared_line(rtu_sim: tuple[InverterSimulator, str]) -> None:
    _, port = rtu_sim
    driver = ModbusDriver()
    fast = {"baudrate": 115200}  # a pty ignores the speed; it only shortens the computed timeouts here
    present, absent = (
        driver.session(rtu_spec(port, 1, **fast)),
        driver.session(rtu_spec(port, 9, 0.05, **fast)),
    )
    try:
        await present.connect()
        await absent.connect()
        scattered = ModbusDriver().compile(rtu_spec(port, 9))  # 3 requests
        for _ in range(2):  # 6 timeouts in a row: pymodbus closes a TCP client after 3
            with pytest.raises(DeviceUnreachable):
                await absent.read(scattered)
        assert present.connected and (await present.read(scattered))[2] == 103
    finally:
        await present.close()
        await absent.close()


async def test_a_second_device_with_other_line_settings_is_refused(
    rtu_sim: tuple[InverterSimulator, str],
) -> None:
    _, port = rtu_sim
    driver = ModbusDriver()
    first, second = driver.session(rtu_spec(port, 1)), driver.session(rtu_spec(port, 2, baudrate=9600))
    try:
        await first.connect()
        with pytest.raises(DeviceUnreachable, match="already open with settings"):
            await second.connect()
        assert len(driver.lines) == 1
    finally:
        await first.close()
        await second.close()
    assert len(driver.lines) == 0


async def test_missing_serial_port_is_unreachable(tmp_path: Path) -> None:
    driver = ModbusDriver()
    session = driver.session(rtu_spec(str(tmp_path / "no-such-tty"), 1))
    with pytest.raises(DeviceUnreachable, match="cannot open serial port"):
        await session.connect()
    assert len(driver.lines) == 0


def test_inter_frame_gap_and_timeout_follow_the_baud_rate() -> None:
    assert inter_frame_gap(9600) == pytest.approx(3.5 * 11 / 9600)  # 4.01 ms
    assert inter_frame_gap(19200) == pytest.approx(3.5 * 11 / 19200)  # 2.01 ms
    assert inter_frame_gap(38400) == inter_frame_gap(115200) == 0.00175
    assert line_timeout(9600, 1.0) == pytest.approx(1.0 + 2 * 256 * 11 / 9600)
