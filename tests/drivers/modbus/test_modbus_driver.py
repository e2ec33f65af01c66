"""The Modbus driver's session against a real pymodbus server on 127.0.0.1 (built here, with fixed registers).

The server is deliberately not `simulators/modbus_inverter.py` and shares no code with the driver: its
registers are written out by hand below.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus import ModbusConnection, ModbusDriver, ModbusPoint, ModbusSession
from edge.plugins import PluginRegistry, read_manifest
from edge.sdk.drivers import DeviceSession, DeviceSpec, Driver, ReadPlan
from edge.sdk.errors import DeviceUnreachable, WriteRejected
from edge.sdk.points import PointConfig, PointFault
from tests.helpers import free_port

UNIT = 1
_EXC2 = PointFault("modbus exception 2 (illegal data address)")
# holding registers 0..19 and 100..109 exist; 20..99 and 110.. are illegal addresses
HOLDING = [
    0x1234,  # 0 uint16 4660
    0xFFFE,  # 1 int16 -2
    0xFFFE, 0x1DC0,  # 2 int32 -123456, big word order
    0x5678, 0x1234,  # 4 uint32 0x12345678, little word order
    0x3FC0, 0x0000,  # 6 float32 1.5, big
    0x0000, 0xC148,  # 8 float32 -12.5, little
    *([0] * 10),  # 10..19 write targets
]  # fmt: skip
HIGH = [100 + i for i in range(10)]  # 100..109
INPUT = [7, 0xFFF9, 9]
COILS = [True, False, True, True] + [False] * 12
DISCRETE = [False, True] * 8


class _Server:
    """A pymodbus TCP server that can be stopped, restarted on its port, and made silent or a failing gateway."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.silent = False  # drop every response
        self.silent_addresses: set[int] = set()  # drop responses to requests starting there
        self.gateway_failure = False  # answer every request with exception 0x0B
        self.clamp_writes: int | None = None  # store at most this value, as a device limiting a setpoint does
        # exception 2 for reads including both this address and the one before it
        self.refuse_spanning: int | None = None
        self._last_address: int | None = None
        self.requests: list[tuple[int, int, int]] = []  # (function code, address, count) received
        self.server: ModbusTcpServer | None = None

    async def start(self) -> None:
        device = SimDevice(
            id=UNIT,
            simdata=(
                [SimData(0, values=COILS, datatype=DataType.BITS)],
                [SimData(0, values=DISCRETE, datatype=DataType.BITS)],
                [
                    SimData(0, values=HOLDING, datatype=DataType.REGISTERS),
                    SimData(100, values=HIGH, datatype=DataType.REGISTERS),
                ],
                [SimData(0, values=INPUT, datatype=DataType.REGISTERS)],
            ),
            action=self._action,
        )
        self.server = ModbusTcpServer(
            device,
            address=("127.0.0.1", self.port),
            trace_pdu=self._trace_pdu,
            trace_packet=self._trace_packet,
        )
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()  # type: ignore[no-untyped-call]
            self.server = None

    async def registers(self, address: int, count: int) -> list[int]:
        assert self.server is not None
        return list(await self.server.async_getValues(UNIT, 3, address, count))

    async def coil(self, address: int) -> bool:
        assert self.server is not None
        return bool((await self.server.async_getValues(UNIT, 1, address, 1))[0])

    async def _action(
        self, _fc: int, _start: int, address: int, count: int, _registers: Any, values: Any
    ) -> ExcCodes | None:
        if values and self.clamp_writes is not None and not isinstance(values[0], bool):
            values[:] = [min(v, self.clamp_writes) for v in values]
        cut = self.refuse_spanning
        if cut is not None and address < cut < address + count:
            return ExcCodes.ILLEGAL_ADDRESS
        return ExcCodes.GATEWAY_NO_RESPONSE if self.gateway_failure else None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self._last_address = getattr(pdu, "address", None)
            self.requests.append((pdu.function_code, getattr(pdu, "address", -1), getattr(pdu, "count", -1)))
        return pdu

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and (self.silent or self._last_address in self.silent_addresses):
            return b""  # the device stays silent, as a dead RTU slave behind a gateway does
        return data


@pytest.fixture
async def server() -> AsyncIterator[_Server]:
    srv = _Server(free_port())
    await srv.start()
    yield srv
    await srv.stop()


def p(name: str, address: int, type_: Any = "uint16", table: Any = "holding", **kw: Any) -> ModbusPoint:
    return ModbusPoint(name=name, address=address, type=type_, table=table, **kw)


def spec(port: int, points: list[ModbusPoint], timeout: float = 0.5, **connection: Any) -> DeviceSpec:
    return DeviceSpec(
        name="dev1",
        tenant="t1",
        site="s1",
        driver="modbus",
        connection=ModbusConnection(host="127.0.0.1", port=port, **connection),
        points=tuple(points),
        poll_interval=1.0,
        timeout=timeout,
        profile="test",
    )


@pytest.fixture
async def sessions() -> AsyncIterator[list[ModbusSession]]:
    """Sessions opened by a test, closed afterwards whatever happened."""
    opened: list[ModbusSession] = []
    yield opened
    for session in opened:
        await session.close()


async def open_session(device: DeviceSpec, sessions: list[ModbusSession]) -> ModbusSession:
    session = ModbusDriver().session(device)
    sessions.append(session)
    await session.connect()
    return session


ALL_TYPES = [
    p("u16", 0),
    p("i16", 1, "int16"),
    p("i32", 2, "int32"),
    p("u32_little", 4, "uint32", word_order="little"),
    p("f32", 6, "float32"),
    p("f32_little", 8, "float32", word_order="little"),
    p("high", 105),
    p("ir0", 0, table="input"),
    p("ir1", 1, "int16", table="input"),
    p("coil0", 0, "bool", "coil"),
    p("coil1", 1, "bool", "coil"),
    p("coil3", 3, "bool", "coil"),
    p("di1", 1, "bool", "discrete"),
    p("di2", 2, "bool", "discrete"),
]
EXPECTED = [0x1234, -2, -123456, 0x12345678, 1.5, -12.5, 105, 7, -7, True, False, True, True, False]


async def test_reads_every_type(server: _Server, sessions: list[ModbusSession]) -> None:
    device = spec(server.port, ALL_TYPES)
    plan = ModbusDriver().compile(device)
    assert [(r.table, r.start, r.count) for r in plan.requests] == [
        ("holding", 0, 10),
        ("holding", 105, 1),
        ("input", 0, 2),
        ("coil", 0, 4),
        ("discrete", 1, 2),
    ]
    session = await open_session(device, sessions)
    values = await session.read(plan)
    assert values == EXPECTED
    assert [type(v) for v in values] == [type(v) for v in EXPECTED]


async def test_device_word_order_applies_to_points_without_one(
    server: _Server, sessions: list[ModbusSession]
) -> None:
    device = spec(server.port, [p("u32", 4, "uint32"), p("f32", 8, "float32")], word_order="little")
    session = await open_session(device, sessions)
    assert await session.read(ModbusDriver().compile(device)) == [0x12345678, -12.5]


async def test_illegal_address_faults_only_its_block(server: _Server, sessions: list[ModbusSession]) -> None:
    points = [p("a", 0), p("gone", 300), p("b", 101, "int16"), p("also_gone", 301)]
    device = spec(server.port, points)
    plan = ModbusDriver().compile(device)
    assert len(plan.requests) == 3
    session = await open_session(device, sessions)
    fault = PointFault("modbus exception 2 (illegal data address)")
    assert await session.read(plan) == [0x1234, fault, 101, fault]


async def test_a_block_bridging_an_illegal_hole_is_split_and_remembered(
    server: _Server, sessions: list[ModbusSession]
) -> None:
    # 19 and 100 are valid, 20..99 are not: bridging the gap reads illegal addresses
    device = spec(server.port, [p("a", 19), p("b", 100)], max_gap=124)
    session = await open_session(device, sessions)
    plan = ModbusDriver().compile(device)
    assert await session.read(plan) == [0, 100]
    server.requests.clear()
    assert await session.read(plan) == [0, 100]
    assert server.requests == [(3, 19, 1), (3, 100, 1)]  # read around the hole, no exception any more


async def test_gateway_exceptions_on_every_request_mean_unreachable(
    server: _Server, sessions: list[ModbusSession]
) -> None:
    device = spec(server.port, ALL_TYPES)
    session = await open_session(device, sessions)
    server.gateway_failure = True
    with pytest.raises(
        DeviceUnreachable, match=r"modbus exception 11 \(gateway target device failed to respond\)"
    ):
        await session.read(ModbusDriver().compile(device))


async def test_unknown_unit_id_means_unreachable(server: _Server, sessions: list[ModbusSession]) -> None:
    # pymodbus' simulator answers an unknown unit id with exception 4 (a real gateway would send 0x0B)
    device = spec(server.port, [p("a", 0)], unit_id=9)
    session = await open_session(device, sessions)
    with pytest.raises(DeviceUnreachable, match="modbus exception 4"):
        await session.read(ModbusDriver().compile(device))


async def test_silent_block_times_out_alone(server: _Server, sessions: list[ModbusSession]) -> None:
    device = spec(server.port, [p("a", 0), p("b", 100), p("c", 0, table="input")], timeout=0.3)
    session = await open_session(device, sessions)
    server.silent_addresses = {100}
    values = await session.read(ModbusDriver().compile(device))
    assert values == [0x1234, PointFault("timeout"), 7]


async def test_silent_device_is_unreachable(server: _Server, sessions: list[ModbusSession]) -> None:
    device = spec(server.port, [p("a", 0), p("b", 100)], timeout=0.3)
    session = await open_session(device, sessions)
    server.silent = True
    started = time.monotonic()
    with pytest.raises(DeviceUnreachable, match="timeout"):
        await session.read(ModbusDriver().compile(device))
    assert time.monotonic() - started < 1.5  # two requests, 0.3 s each, no retries
    server.silent = False
    assert await session.read(ModbusDriver().compile(device)) == [0x1234, 100]


async def test_server_stop_is_unreachable_promptly_and_reconnect_works(
    server: _Server, sessions: list[ModbusSession]
) -> None:
    device = spec(server.port, ALL_TYPES, timeout=0.5)
    plan = ModbusDriver().compile(device)
    session = await open_session(device, sessions)
    assert await session.read(plan) == EXPECTED

    await server.stop()
    started = time.monotonic()
    with pytest.raises(DeviceUnreachable):
        await session.read(plan)
    assert time.monotonic() - started < 2.0
    with pytest.raises(DeviceUnreachable, match="not connected"):
        await session.read(plan)
    with pytest.raises(DeviceUnreachable, match="cannot connect"):
        await session.connect()

    await server.start()  # back on the same port
    await session.connect()
    assert await session.read(plan) == EXPECTED


async def test_connect_to_a_dead_port_is_unreachable(sessions: list[ModbusSession]) -> None:
    session = ModbusDriver().session(spec(free_port(), [p("a", 0)]))
    sessions.append(session)
    started = time.monotonic()
    with pytest.raises(DeviceUnreachable, match=r"cannot connect to 127\.0\.0\.1") as info:
        await session.connect()
    assert info.value.device == "dev1"
    assert time.monotonic() - started < 2.0
    assert not session.connected


async def test_writes_land_in_the_server(server: _Server, sessions: list[ModbusSession]) -> None:
    points = [
        p("u16", 10, writable=True),
        p("i16", 11, "int16", writable=True),
        p("i32", 12, "int32", writable=True),
        p("f32", 14, "float32", word_order="little", writable=True),
        p("u32", 16, "uint32", writable=True),
        p("coil2", 2, "bool", "coil", writable=True),
    ]
    device = spec(server.port, points)
    session = await open_session(device, sessions)
    by_name = {pt.name: pt for pt in points}
    await session.write(by_name["u16"], 4321)
    await session.write(by_name["i16"], -5)
    await session.write(by_name["i32"], -123456)
    await session.write(by_name["f32"], 2.5)
    await session.write(by_name["u32"], 4_000_000_000.0)  # de-scaled values arrive as floats
    await session.write(by_name["coil2"], False)
    await session.write(by_name["coil2"], True)
    assert await server.registers(10, 8) == [4321, 0xFFFB, 0xFFFE, 0x1DC0, 0x0000, 0x4020, 0xEE6B, 0x2800]
    assert await server.coil(2) is True
    assert await session.read(ModbusDriver().compile(device)) == [4321, -5, -123456, 2.5, 4_000_000_000, True]


async def test_wide_types_and_strings_are_written_and_read_back(
    server: _Server, sessions: list[ModbusSession]
) -> None:
    points = [
        p("u64", 10, "uint64", writable=True, byte_order="little"),
        p("name", 14, "string", length=4, writable=True),
        p("mode", 18, labels={0: "auto", 3: "manual"}, writable=True),
    ]
    device = spec(server.port, points)
    session = await open_session(device, sessions)
    await session.write(points[0], 0x0102_0304_0506_0708)
    await session.write(points[1], "PV-7")
    await session.write(points[2], "manual")
    assert await server.registers(10, 9) == [0x0201, 0x0403, 0x0605, 0x0807, 0x5056, 0x2D37, 0, 0, 3]
    assert await session.read(ModbusDriver().compile(device)) == [0x0102_0304_0506_0708, "PV-7", "manual"]


async def test_a_write_the_device_does_not_keep_is_rejected(
    server: _Server, sessions: list[ModbusSession]
) -> None:
    server.clamp_writes = 100
    session = await open_session(spec(server.port, []), sessions)
    await session.write(p("limit", 10, writable=True), 80)
    with pytest.raises(WriteRejected, match=r"read back \[100\], expected \[4321\]") as info:
        await session.write(p("limit", 10, writable=True), 4321)
    assert info.value.point == "limit"
    unverified = await open_session(spec(server.port, [], verify_writes=False), sessions)
    await unverified.write(p("limit", 11, writable=True), 4321)  # accepted: no read-back asked
    assert await server.registers(10, 2) == [100, 100]


async def test_writes_refused(server: _Server, sessions: list[ModbusSession]) -> None:
    session = await open_session(spec(server.port, []), sessions)
    with pytest.raises(WriteRejected, match="input table is read-only") as info:
        await session.write(p("ir", 0, table="input"), 1)
    assert info.value.point == "ir" and info.value.device == "dev1"
    with pytest.raises(WriteRejected, match="discrete table is read-only"):
        await session.write(p("di", 0, "bool", "discrete"), True)
    with pytest.raises(WriteRejected, match=r"70000 is out of the uint16 range"):
        await session.write(p("u16", 10), 70000)
    with pytest.raises(WriteRejected, match=r"modbus exception 2 \(illegal data address\)"):
        await session.write(p("gone", 300), 1)
    assert await server.registers(10, 1) == [0]


async def test_write_when_not_connected_is_unreachable(sessions: list[ModbusSession]) -> None:
    session = ModbusDriver().session(spec(free_port(), []))
    with pytest.raises(DeviceUnreachable, match="not connected"):
        await session.write(p("u16", 10), 1)


async def test_gateway_exception_on_write_is_unreachable(
    server: _Server, sessions: list[ModbusSession]
) -> None:
    session = await open_session(spec(server.port, []), sessions)
    server.gateway_failure = True
    with pytest.raises(DeviceUnreachable, match="modbus exception 11"):
        await session.write(p("u16", 10), 1)


async def test_close_is_idempotent(server: _Server) -> None:
    session = ModbusDriver().session(spec(server.port, []))
    await session.connect()
    assert session.connected
    await session.close()
    await session.close()
    assert not session.connected


# --- the plug-in as the kernel sees it -------------------------------------------------------------------------


def test_driver_satisfies_the_kernel_protocols() -> None:
    driver: Driver = ModbusDriver()
    assert isinstance(driver, Driver)
    device = spec(502, ALL_TYPES)
    assert isinstance(driver.compile(device), ReadPlan)
    assert isinstance(driver.session(device), DeviceSession)
    assert (ModbusDriver.profiles_dir / "sunspec-inverter.toml").is_file()


def test_manifest_loads_through_the_registry() -> None:
    manifest = read_manifest("drivers.modbus")
    assert (manifest.name, manifest.kind, manifest.version) == ("modbus", "driver", "0.1.0")
    assert manifest.description
    # the registry finds the manifest beside the module that defines the entry point object
    assert ModbusDriver.__module__.rpartition(".")[0] == "drivers.modbus"
    registry = PluginRegistry()
    registry.add_driver(manifest, ModbusDriver)
    assert isinstance(registry.driver("modbus"), ModbusDriver)


def test_compile_refuses_foreign_models() -> None:
    device = spec(502, [])
    with pytest.raises(TypeError, match="not a ModbusPoint"):
        ModbusDriver().compile(dataclasses.replace(device, points=(PointConfig(name="x"),)))
    with pytest.raises(TypeError, match="not a ModbusConnection"):
        ModbusDriver().session(dataclasses.replace(device, connection=PointConfig(name="x")))


# --- adaptive planning: the server has holding 0..19 and 100..109 only ---------------------------------


async def test_session_learns_a_hole_and_reads_around_it(
    server: _Server, sessions: list[ModbusSession]
) -> None:
    points = [p("a", 0), p("b", 10), p("c", 19), p("gone", 50), p("d", 100), p("e", 105), p("gone2", 120)]
    device = spec(server.port, points, max_gap=124)
    plan = ModbusDriver().compile(device)
    assert [(r.table, r.start, r.count) for r in plan.requests] == [("holding", 0, 121)]
    session = await open_session(device, sessions)
    expected = [0x1234, 0, 0, _EXC2, 100, 105, _EXC2]
    assert await session.read(plan) == expected
    first_cycle = len(server.requests)
    assert first_cycle <= 2 * len(points)  # bounded: at most one request per node of the split tree
    server.requests.clear()
    assert await session.read(plan) == expected
    assert server.requests == [(3, 0, 20), (3, 100, 6)]  # nothing refused any more
    assert ("holding", 50) in session.learned.bad and ("holding", 5) not in session.learned.bad


async def test_session_learns_a_cut_when_the_halves_answer(
    server: _Server, sessions: list[ModbusSession]
) -> None:
    # Real devices sometimes refuse reads that cross an internal block boundary; emulate one at 10.
    points = [p("a", 8), p("b", 9), p("c", 10), p("d", 11)]
    device = spec(server.port, points)
    plan = ModbusDriver().compile(device)
    server.refuse_spanning = 10
    session = await open_session(device, sessions)
    assert await session.read(plan) == [0, 0xC148, 0, 0]
    assert session.learned.cuts == {("holding", 10)}
    server.requests.clear()
    await session.read(plan)
    assert server.requests == [(3, 8, 2), (3, 10, 2)]
