"""The Modbus inverter simulator, checked with a plain pymodbus client (never the gateway's decoders).

Most tests use a huge update_interval and call `update_now()` so registers cannot change between a
read and the `state()` truth it is compared with.
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from simulators.modbus_inverter import InverterSimulator, InverterState, OperatingState, main
from tests.helpers import free_port, wait_port

pytestmark = pytest.mark.timeout(30)
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
async def sim() -> AsyncIterator[InverterSimulator]:
    async with InverterSimulator(3, free_port(), update_interval=3600, sim_time="12:00") as s:
        yield s


@pytest.fixture
async def client(sim: InverterSimulator) -> AsyncIterator[AsyncModbusTcpClient]:
    c = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=0.5, retries=0)
    assert await c.connect()
    yield c
    c.close()


async def _hr(c: AsyncModbusTcpClient, address: int, count: int, unit: int = 1) -> list[int]:
    rr = await c.read_holding_registers(address, count=count, device_id=unit)
    assert not rr.isError(), rr
    return list(rr.registers)


# independent decoding, straight from the SunSpec rules
def _s16(r: int) -> int:
    return r - 0x10000 if r & 0x8000 else r


def _u32(hi: int, lo: int) -> int:
    return hi << 16 | lo


def _s32(hi: int, lo: int) -> int:
    v = _u32(hi, lo)
    return v - 0x1_0000_0000 if v & 0x8000_0000 else v


def _f32(hi: int, lo: int) -> float:
    return float(struct.unpack(">f", struct.pack(">HH", hi, lo))[0])


def _text(regs: list[int]) -> str:
    return b"".join(r.to_bytes(2, "big") for r in regs).rstrip(b"\0").decode("ascii")


def _at(regs: list[int], address: int) -> int:
    return regs[address - 40000]


def _scaled(regs: list[int], address: int, sf_address: int, signed: bool = False) -> tuple[float, int]:
    raw = _at(regs, address)
    sf = _s16(_at(regs, sf_address))
    return (_s16(raw) if signed else raw) * 10.0**sf, sf


async def test_sunspec_header_and_model_chain(client: AsyncModbusTcpClient) -> None:
    regs = await _hr(client, 40000, 123, unit=2)
    assert _text(regs[0:2]) == "SunS"
    assert regs[2:4] == [1, 65]
    assert _text(regs[4:20]) == "EdgeSim"
    assert _text(regs[20:36]) == "PV-10K"
    assert _text(regs[36:44]) == ""
    assert _text(regs[44:52]) == "1.0.0"
    assert _text(regs[52:68]) == "SIM00002"
    assert _at(regs, 40068) == 2
    assert [_at(regs, 40069), _at(regs, 40070)] == [103, 50]
    assert [_at(regs, 40121), _at(regs, 40122)] == [0xFFFF, 0]


async def test_model_chain_is_walkable(client: AsyncModbusTcpClient) -> None:
    regs = await _hr(client, 40000, 125)
    address, chain = 40002, []
    for _ in range(10):  # bounded walk: id, length, body, next id
        model_id, length = _at(regs, address), _at(regs, address + 1)
        chain.append(model_id)
        if model_id == 0xFFFF:
            break
        address += 2 + length
    assert chain == [1, 103, 0xFFFF]


async def test_each_unit_is_a_distinct_device(client: AsyncModbusTcpClient) -> None:
    serials = {_text(await _hr(client, 40052, 16, unit=u)) for u in (1, 2, 3)}
    assert serials == {"SIM00001", "SIM00002", "SIM00003"}


def _expect(got: tuple[float, int], want: float) -> None:
    value, sf = got
    assert value == pytest.approx(want, abs=10.0**sf / 2)


async def test_registers_decode_to_the_truth(sim: InverterSimulator, client: AsyncModbusTcpClient) -> None:
    regs = await _hr(client, 40000, 123, unit=3)
    s = sim.state(3)
    _expect(_scaled(regs, 40071, 40075), s.ac_current_a)
    for i, current in enumerate(s.phase_currents_a):
        _expect(_scaled(regs, 40072 + i, 40075), current)
    for i, volts in enumerate(s.line_voltages_v + s.phase_voltages_v):
        _expect(_scaled(regs, 40076 + i, 40082), volts)
    _expect(_scaled(regs, 40083, 40084, signed=True), s.ac_power_w)
    _expect(_scaled(regs, 40085, 40086), s.frequency_hz)
    _expect(_scaled(regs, 40087, 40088, signed=True), s.apparent_power_va)
    _expect(_scaled(regs, 40089, 40090, signed=True), s.reactive_power_var)
    _expect(_scaled(regs, 40091, 40092, signed=True), s.power_factor_pct)
    assert _u32(_at(regs, 40093), _at(regs, 40094)) == s.energy_wh and _at(regs, 40095) == 0
    _expect(_scaled(regs, 40096, 40097), s.dc_current_a)
    _expect(_scaled(regs, 40098, 40099), s.dc_voltage_v)
    _expect(_scaled(regs, 40100, 40101, signed=True), s.dc_power_w)
    _expect(_scaled(regs, 40102, 40106, signed=True), s.cabinet_temp_c)
    _expect(_scaled(regs, 40103, 40106, signed=True), s.heatsink_temp_c)
    assert _at(regs, 40107) == s.state == OperatingState.MPPT
    assert s.reactive_power_var < 0 and _at(regs, 40089) & 0x8000  # two's complement on the wire
    _plausible_noon(s)


def _plausible_noon(s: InverterState) -> None:
    assert 8000 <= s.rated_w <= 12000
    assert 0.85 * s.rated_w < s.ac_power_w <= s.rated_w
    assert s.dc_power_w > s.ac_power_w and 550 < s.dc_voltage_v < 650
    assert s.dc_current_a == pytest.approx(s.dc_power_w / s.dc_voltage_v, abs=0.01)
    assert 49.9 < s.frequency_hz < 50.1 and all(225 < v < 235 for v in s.phase_voltages_v)


async def test_extension_block_word_orders(sim: InverterSimulator, client: AsyncModbusTcpClient) -> None:
    regs = await _hr(client, 40200, 9, unit=1)
    s = sim.state(1)
    assert _f32(regs[0], regs[1]) == s.ac_power_w  # big word order
    assert _f32(regs[3], regs[2]) == s.ac_power_w  # little word order
    assert _u32(regs[5], regs[4]) == s.energy_wh  # little word order
    assert _s32(regs[6], regs[7]) == s.grid_export_w > 0  # exporting at noon
    assert regs[8] == 0xABCD


async def test_night_sleeps_and_imports(sim: InverterSimulator, client: AsyncModbusTcpClient) -> None:
    sim.set_sim_time("23:00")
    sim.update_now()
    regs = await _hr(client, 40083, 25, unit=1)
    assert regs[0] == 0 and regs[40107 - 40083] == OperatingState.SLEEPING
    ext = await _hr(client, 40206, 2, unit=1)
    assert -300 < _s32(*ext) < 0  # small import at night, negative int32 on the wire
    assert sim.state(1).ac_power_w == 0 and sim.state(1).state == OperatingState.SLEEPING


async def test_energy_accumulates_in_background() -> None:
    # noon, clock 3600x: each 50 ms update integrates ~3 minutes of ~10 kW
    async with InverterSimulator(
        1, free_port(), update_interval=0.05, sim_time="12:00", time_scale=3600
    ) as s:
        c = AsyncModbusTcpClient("127.0.0.1", port=s.port, timeout=0.5, retries=0)
        assert await c.connect()
        try:
            first = _u32(*await _hr(c, 40093, 2))
            truth = s.state(1).energy_wh
            seen = first
            for _ in range(40):  # bounded: 2 s at most
                await asyncio.sleep(0.05)
                seen = _u32(*await _hr(c, 40093, 2))
                if seen > first:
                    break
            assert seen > first >= 1_000_000 + 12345
            assert s.state(1).energy_wh > truth
        finally:
            c.close()


async def test_illegal_addresses_give_exception_2(client: AsyncModbusTcpClient) -> None:
    for address, count in ((40400, 1), (40290, 12), (39999, 2)):
        rr = await client.read_holding_registers(address, count=count, device_id=1)
        assert rr.isError() and rr.exception_code == 2, (address, count)
    rr = await client.read_holding_registers(40290, count=11, device_id=1)  # ends exactly at 40300
    assert not rr.isError()


async def test_bit_tables_and_input_registers(client: AsyncModbusTcpClient) -> None:
    coils = await client.read_coils(0, count=16, device_id=1)
    assert coils.bits[0] is True and coils.bits[1] is False
    inputs = await client.read_discrete_inputs(0, count=16, device_id=1)
    assert not inputs.isError() and len(inputs.bits) >= 16
    ir = await client.read_input_registers(0, count=100, device_id=1)
    assert ir.registers == [0] * 100


async def test_offline_unit_is_silent_others_answer(
    sim: InverterSimulator, client: AsyncModbusTcpClient
) -> None:
    sim.set_offline(2, True)
    start = time.monotonic()
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(40000, count=2, device_id=2)
    assert 0.4 < time.monotonic() - start < 2.0
    assert _text(await _hr(client, 40000, 2, unit=1)) == "SunS"
    sim.set_offline(2, False)
    assert _text(await _hr(client, 40000, 2, unit=2)) == "SunS"


async def test_unknown_unit_is_silent(client: AsyncModbusTcpClient) -> None:
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(40000, count=2, device_id=9)


async def test_garbage_unit_answers_device_failure(
    sim: InverterSimulator, client: AsyncModbusTcpClient
) -> None:
    sim.set_garbage(3, True)
    rr = await client.read_holding_registers(40000, count=2, device_id=3)
    assert rr.isError() and rr.exception_code == 4
    assert _text(await _hr(client, 40000, 2, unit=1)) == "SunS"
    sim.set_garbage(3, False)
    assert _text(await _hr(client, 40000, 2, unit=3)) == "SunS"


async def test_latency_delays_only_its_unit(sim: InverterSimulator, client: AsyncModbusTcpClient) -> None:
    sim.set_latency(2, 0.15)
    start = time.monotonic()
    await _hr(client, 40000, 2, unit=2)
    assert 0.14 < time.monotonic() - start < 1.0
    start = time.monotonic()
    await _hr(client, 40000, 2, unit=1)
    assert time.monotonic() - start < 0.1
    sim.set_latency(2, 0)


async def test_exception_rate(sim: InverterSimulator, client: AsyncModbusTcpClient) -> None:
    sim.set_exception_rate(1, 0.5)
    codes = []
    for _ in range(60):
        rr = await client.read_holding_registers(40000, count=2, device_id=1)
        codes.append(rr.exception_code if rr.isError() else 0)
    assert set(codes) == {0, 6} and 10 < codes.count(6) < 50  # seeded: about half are "server busy"
    sim.set_exception_rate(1, 1.0)
    assert (await client.read_holding_registers(40000, count=2, device_id=1)).exception_code == 6
    assert _text(await _hr(client, 40000, 2, unit=2)) == "SunS"
    with pytest.raises(ValueError, match=r"0\.\.1"):
        sim.set_exception_rate(1, 1.5)


async def test_dropped_connections(sim: InverterSimulator, client: AsyncModbusTcpClient) -> None:
    assert _text(await _hr(client, 40000, 2)) == "SunS"
    assert sim.drop_connections() == 1
    for _ in range(100):  # bounded: the client notices the closed socket within a few loop turns
        if not client.connected:
            break
        await asyncio.sleep(0.01)
    assert not client.connected
    assert await client.connect()
    assert _text(await _hr(client, 40000, 2)) == "SunS"


async def test_w_max_lim_pct_caps_power(sim: InverterSimulator, client: AsyncModbusTcpClient) -> None:
    assert await _hr(client, 40300, 1) == [100]
    rr = await client.write_register(40300, 10, device_id=1)
    assert not rr.isError()
    sim.update_now()
    power = _s16((await _hr(client, 40083, 1))[0])
    assert 0 < power <= 0.1 * sim.state(1).rated_w
    assert sim.state(1).state == OperatingState.THROTTLED
    assert sim.state(2).ac_power_w > 0.5 * sim.state(2).rated_w  # other units keep their own limit
    bad = await client.write_register(40300, 150, device_id=1)
    assert bad.isError() and bad.exception_code == 3
    read_only = await client.write_register(40083, 1, device_id=1)
    assert read_only.isError() and read_only.exception_code == 2


async def test_update_of_50_units_is_cheap() -> None:
    async with InverterSimulator(50, free_port(), update_interval=3600, sim_time="12:00") as s:
        start = time.process_time()  # CPU time: other jobs on a shared machine don't count
        for _ in range(20):
            s.update_now()
        assert (time.process_time() - start) / 20 < 0.010


async def test_main_serves_until_cancelled(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    task = asyncio.create_task(main(port, 2, update_interval=0.1))
    out = ""
    try:
        for _ in range(200):  # bounded: 2 s
            out += capsys.readouterr().out
            if "Modbus simulator" in out or task.done():
                break
            await asyncio.sleep(0.01)
        assert out.strip() == f"Modbus simulator: 2 inverters on 127.0.0.1:{port} (unit ids 1..2)"
        c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0)
        assert await c.connect()
        assert _text(await _hr(c, 40052, 16, unit=2)) == "SIM00002"
        c.close()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_cli_prints_banner_and_stops_on_sigterm() -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "simulators.modbus_inverter", "--port", str(port), "--devices", "4"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        wait_port(port, timeout=10)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert out.strip() == f"Modbus simulator: 4 inverters on 127.0.0.1:{port} (unit ids 1..4)"
    assert proc.returncode == 0
