"""Modbus RTU over TCP (a serial device server) and Modbus ASCII, end to end against the inverter simulator.

Two serial device servers: the simulator's own (RTU frames raw over TCP), and a real bridge — socat joining a
TCP listener to a pty on which the simulator serves RTU, as a Moxa NPort or a USR-TCP232 joins its Ethernet
port to its RS-485 port. ASCII runs on a socat pty pair. Units behind one device server share one TCP
connection and take turns, and discovery walks their SunSpec chain through it.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from drivers.modbus import ModbusConnection, ModbusDriver, ModbusPoint
from drivers.modbus.discovery import parse_hosts
from edge.sdk.drivers import DeviceSpec
from edge.sdk.errors import DeviceUnreachable
from simulators.modbus_inverter import InverterSimulator
from tests.helpers import free_port, wait_until

SOCAT = shutil.which("socat")
W_MAX_LIM_PCT = 40300  # the simulator's power limit (%), its one writable register

POINTS = (
    ModbusPoint(name="manufacturer", address=40004, type="string", length=16),
    ModbusPoint(name="serial", address=40052, type="string", length=16),
    ModbusPoint(name="model_id", address=40069),
    ModbusPoint(name="energy", address=40093, type="acc32", sunspec=True),
)


def spec(unit: int, timeout: float = 0.5, **connection: Any) -> DeviceSpec:
    return DeviceSpec(
        name=f"inv-{unit}",
        tenant="t",
        site="s",
        driver="modbus",
        connection=ModbusConnection(unit_id=unit, **connection),
        points=POINTS,
        poll_interval=1.0,
        timeout=timeout,
        profile="test",
    )


def _socat(*addresses: str, log: Path) -> subprocess.Popen[bytes]:
    if SOCAT is None:
        pytest.skip("socat is not installed (scripts/setup.sh installs it)")
    with log.open("wb") as out:
        return subprocess.Popen([SOCAT, "-d", "-d", *addresses], stdout=subprocess.DEVNULL, stderr=out)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=5)


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A serial device server: socat's pty (the RS-485 side) and a TCP listener on a free port."""
    tty, port, log = tmp_path / "ttyS", free_port(), tmp_path / "socat.log"
    process = _socat(f"pty,raw,echo=0,link={tty}", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr", log=log)
    try:
        wait_until(
            lambda: "listening on" in log.read_text() or process.poll() is not None,
            5,
            "socat's TCP listener",
            step=0.01,
        )
        assert process.poll() is None, log.read_text()
        yield str(tty), port
    finally:
        _stop(process)


@pytest.fixture
async def bridged_sim(bridge: tuple[str, int]) -> AsyncIterator[tuple[InverterSimulator, int]]:
    tty, port = bridge
    async with InverterSimulator(3, 0, rtu=tty, sim_time="12:00", update_interval=3600) as sim:
        yield sim, port


async def test_discovery_through_a_socat_bridge(
    bridged_sim: tuple[InverterSimulator, int],
) -> None:
    _, port = bridged_sim
    driver = ModbusDriver()
    target = {"host": "127.0.0.1", "port": port, "transport": "rtu-over-tcp", "units": "1-4", "timeout": 0.3}
    progress: list[str] = []
    found = await driver.discover(target, progress.append)  # socat serves one connection: discover first
    assert [d.connection for d in found] == [
        {"transport": "rtu-over-tcp", "host": "127.0.0.1", "port": port, "unit_id": unit}
        for unit in (1, 2, 3)
    ]
    assert found[0].address == f"RTU over TCP 127.0.0.1:{port}/unit 1"
    assert {d.profile_name for d in found} == {"sunspec-inverter"}
    assert found[2].identity["serial"] == "SIM00003"
    assert progress[-1] == "scanned 4/4 unit ids, 3 SunSpec device(s)"


async def test_units_behind_a_socat_bridge_share_one_connection(
    bridged_sim: tuple[InverterSimulator, int],
) -> None:
    sim, port = bridged_sim
    driver = ModbusDriver()
    where = {"transport": "rtu-over-tcp", "host": "127.0.0.1", "port": port}
    specs = [spec(unit, **where) for unit in (1, 2, 3)]
    sessions = [driver.session(s) for s in specs]
    try:
        for session in sessions:
            await session.connect()
        assert len(driver.lines) == 1  # socat accepts one connection: all three share it
        plan = driver.compile(specs[0])
        results = await asyncio.gather(*(s.read(plan) for s in sessions))
        for unit, values in zip((1, 2, 3), results, strict=True):
            assert values[:3] == ["EdgeSim", f"SIM{unit:05d}", 103]
            assert values[3] == round(sim.state(unit).energy_wh)
        limit = ModbusPoint(name="limit", address=W_MAX_LIM_PCT, writable=True)
        await sessions[1].write(limit, 60)  # read back and compared through the bridge too
        assert (await sessions[1].read(driver.compile(replace(specs[1], points=(limit,)))))[0] == 60
    finally:
        for session in sessions:
            await session.close()
    assert len(driver.lines) == 0


@pytest.fixture
async def server_sim() -> AsyncIterator[InverterSimulator]:
    async with InverterSimulator(2, free_port(), framing="rtu", sim_time="12:00") as sim:
        yield sim


async def test_a_silent_unit_behind_a_device_server_does_not_take_its_neighbours_down(
    server_sim: InverterSimulator,
) -> None:
    driver = ModbusDriver()
    where = {"transport": "rtu-over-tcp", "host": "127.0.0.1", "port": server_sim.port}
    # one client serves the line: its timeout is the first device's
    present, absent = driver.session(spec(1, 0.1, **where)), driver.session(spec(9, 0.1, **where))
    plan = driver.compile(spec(1, **where))
    try:
        await present.connect()
        await absent.connect()
        for _ in range(3):  # enough timeouts for pymodbus to close the shared TCP connection
            with pytest.raises(DeviceUnreachable, match="device server accepts connections"):
                await absent.read(plan)
            assert (await present.read(plan))[2] == 103
    finally:
        await present.close()
        await absent.close()


async def test_ascii_on_a_serial_line(tmp_path: Path) -> None:
    a, b, log = tmp_path / "ttyA", tmp_path / "ttyB", tmp_path / "socat.log"
    process = _socat(f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}", log=log)
    try:
        wait_until(lambda: a.exists() and b.exists(), 5, "socat's pty pair", step=0.01)
        async with InverterSimulator(2, 0, rtu=str(a), framing="ascii", sim_time="12:00"):
            driver = ModbusDriver()
            session = driver.session(spec(2, transport="ascii", port=str(b), parity="N"))
            await session.connect()
            try:
                values = await session.read(driver.compile(spec(2, transport="ascii", port=str(b))))
                assert values[:3] == ["EdgeSim", "SIM00002", 103]
            finally:
                await session.close()
    finally:
        _stop(process)


async def test_ascii_over_tcp_reads_writes_and_discovers_through_a_device_server() -> None:
    """A device server set to ASCII: the same reads, a write read back, and discovery, all in ASCII frames."""
    async with InverterSimulator(
        2, free_port(), framing="ascii", sim_time="12:00", update_interval=3600
    ) as sim:
        driver = ModbusDriver()
        where = {"transport": "ascii-over-tcp", "host": "127.0.0.1", "port": sim.port}
        session = driver.session(spec(2, **where))
        await session.connect()
        try:
            values = await session.read(driver.compile(spec(2, **where)))
            assert values[:3] == ["EdgeSim", "SIM00002", 103]
            assert values[3] == round(sim.state(2).energy_wh)
            limit = ModbusPoint(name="limit", address=W_MAX_LIM_PCT, writable=True)
            await session.write(limit, 45)
            assert (await session.read(driver.compile(replace(spec(2, **where), points=(limit,)))))[0] == 45
        finally:
            await session.close()
        target = {**where, "units": "1-3", "timeout": 0.3}
        found = await driver.discover(target, lambda _: None)
        assert [d.connection["unit_id"] for d in found] == [1, 2]
        assert {d.connection["transport"] for d in found} == {"ascii-over-tcp"}
        assert {d.profile_name for d in found} == {"sunspec-inverter"}


def test_connection_framing_and_shared_line_settings() -> None:
    over_tcp = ModbusConnection(transport="ascii-over-tcp", host="10.0.0.9", port=4001)
    assert (over_tcp.framing, over_tcp.is_serial, over_tcp.line) == (
        "ascii",
        False,
        ("10.0.0.9:4001", "ascii"),
    )
    assert ModbusConnection(transport="ascii", port="/dev/ttyS1").framing == "ascii"
    assert ModbusConnection(host="h").framing == "socket"
    with pytest.raises(ValidationError, match="rtu-over-tcp connection needs a host"):
        ModbusConnection(transport="rtu-over-tcp", port=4001)
    with pytest.raises(ValidationError, match="TCP port is an integer"):
        ModbusConnection(transport="rtu-over-tcp", host="h", port="/dev/ttyUSB0")


async def test_rtu_and_ascii_on_one_device_server_are_refused(server_sim: InverterSimulator) -> None:
    driver = ModbusDriver()
    where = {"host": "127.0.0.1", "port": server_sim.port}
    rtu, ascii_ = (
        driver.session(spec(1, transport="rtu-over-tcp", **where)),
        driver.session(spec(2, transport="ascii-over-tcp", **where)),
    )
    try:
        await rtu.connect()
        with pytest.raises(DeviceUnreachable, match="already open with settings"):
            await ascii_.connect()
    finally:
        await rtu.close()
        await ascii_.close()


async def test_discovery_target_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="needs -t host"):
        await ModbusDriver().discover({"transport": "rtu-over-tcp"}, print)
    with pytest.raises(ValueError, match="parity"):
        await ModbusDriver().discover({"transport": "rtu", "port": "/dev/x", "parity": "X"}, print)


def test_host_ranges_for_a_scan_of_many_hosts() -> None:
    assert parse_hosts("10.0.4.11-13,10.0.5.7") == ["10.0.4.11", "10.0.4.12", "10.0.4.13", "10.0.5.7"]
    assert parse_hosts("10.0.4.254-10.0.5.1") == ["10.0.4.254", "10.0.4.255", "10.0.5.0", "10.0.5.1"]
    assert parse_hosts("inverter-1.local") == ["inverter-1.local"]
    with pytest.raises(ValueError, match="runs backwards"):
        parse_hosts("10.0.4.20-11")
    with pytest.raises(ValueError, match="more than 1024 hosts"):
        parse_hosts("10.0.0.0-10.0.8.0")


async def test_a_host_that_refuses_is_skipped_when_scanning_many(server_sim: InverterSimulator) -> None:
    lines: list[str] = []
    target = {
        "host": "127.0.0.1,127.0.0.2",
        "port": server_sim.port,
        "transport": "rtu-over-tcp",
        "units": "1-2",
    }
    found = await ModbusDriver().discover(target | {"timeout": 0.3}, lines.append)
    assert [d.connection["unit_id"] for d in found] == [1, 2]
    assert any(
        line.startswith("RTU over TCP 127.0.0.2:") and line.endswith("cannot connect, skipped")
        for line in lines
    )
