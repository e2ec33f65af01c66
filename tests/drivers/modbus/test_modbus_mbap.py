"""The lean MBAP client (`drivers/modbus/mbap.py`) against a raw asyncio server on 127.0.0.1 that answers
each request with whatever bytes a test scripts: good frames, split frames, late and foreign answers, broken
headers. Then the session on top of it: the faults a user sees for such devices.

The server shares no code with the client: its frames are packed here by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator, Callable

import pytest
from pymodbus.exceptions import ConnectionException, ModbusIOException

from drivers.modbus import ModbusConnection, ModbusDriver, ModbusPoint
from drivers.modbus.mbap import MbapClient
from edge.sdk.drivers import DeviceSpec
from edge.sdk.errors import DeviceUnreachable
from edge.sdk.points import PointFault
from tests.helpers import free_port

TIMEOUT = 0.3
# "at once": a dropped connection is noticed well before the timeout of a patient client, with room for a
# loaded test box
PATIENT = 3.0
PROMPT = 1.0

Request = tuple[int, int, bytes]  # transaction id, unit id, PDU
Script = Callable[[Request], list[bytes]]  # the chunks to send back, each written (and drained) on its own


def frame(tid: int, unit: int, pdu: bytes, protocol: int = 0, length: int | None = None) -> bytes:
    size = len(pdu) + 1 if length is None else length
    return struct.pack(">HHHB", tid, protocol, size, unit) + pdu


def registers(request: Request, values: list[int]) -> bytes:
    tid, unit, pdu = request
    return frame(tid, unit, bytes([pdu[0], 2 * len(values)]) + struct.pack(f">{len(values)}H", *values))


def echo(request: Request) -> list[bytes]:
    """A device that answers reads with registers 1, 2, 3... and acknowledges writes as Modbus does."""
    tid, unit, pdu = request
    fc, _address, count = struct.unpack_from(">BHH", pdu)
    if fc in (1, 2):
        return [frame(tid, unit, bytes([fc, (count + 7) // 8]) + bytes([0b101] * ((count + 7) // 8)))]
    if fc in (3, 4):
        return [registers(request, list(range(1, count + 1)))]
    return [frame(tid, unit, pdu[:5])]


class RawDevice:
    """A Modbus TCP server that answers every request per `script`; it records what it received."""

    def __init__(self) -> None:
        self.port = free_port()
        self.script: Script = echo
        self.requests: list[Request] = []
        self.writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self.writers:
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def send(self, data: bytes) -> None:
        """Unsolicited bytes on every open connection."""
        for writer in self.writers:
            writer.write(data)
            await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                tid, _protocol, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                request = (tid, unit, await reader.readexactly(length - 1))
                self.requests.append(request)
                for chunk in self.script(request):
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0.01)  # each chunk its own TCP segment
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def device() -> AsyncIterator[RawDevice]:
    dev = RawDevice()
    await dev.start()
    yield dev
    await dev.stop()


@pytest.fixture
async def client(device: RawDevice) -> AsyncIterator[MbapClient]:
    c = MbapClient("127.0.0.1", device.port, TIMEOUT)
    assert await c.connect()
    yield c
    c.close()


@pytest.fixture
async def patient(device: RawDevice) -> AsyncIterator[MbapClient]:
    c = MbapClient("127.0.0.1", device.port, PATIENT)
    assert await c.connect()
    yield c
    c.close()


async def test_reads_of_every_function_code(client: MbapClient, device: RawDevice) -> None:
    assert tuple((await client.read_holding_registers(10, count=50, device_id=3)).registers) == tuple(
        range(1, 51)
    )
    assert tuple((await client.read_input_registers(0, count=125, device_id=3)).registers) == tuple(
        range(1, 126)
    )
    coils = await client.read_coils(0, count=10, device_id=3)
    assert list(coils.bits[:10]) == [True, False, True, False, False, False, False, False, True, False]
    assert not coils.isError()
    assert list((await client.read_discrete_inputs(0, count=3, device_id=3)).bits[:3]) == [True, False, True]
    assert [(unit, pdu) for _, unit, pdu in device.requests] == [
        (3, bytes.fromhex("03 000a 0032")),
        (3, bytes.fromhex("04 0000 007d")),
        (3, bytes.fromhex("01 0000 000a")),
        (3, bytes.fromhex("02 0000 0003")),
    ]


async def test_writes_are_framed_as_modbus_defines(client: MbapClient, device: RawDevice) -> None:
    assert not (await client.write_coil(7, True, device_id=1)).isError()
    assert not (await client.write_coil(7, False, device_id=1)).isError()
    assert not (await client.write_register(300, 0xBEEF, device_id=1)).isError()
    assert not (await client.write_registers(40, [1, 0xFFFF, 3], device_id=1)).isError()
    assert [pdu for _, _, pdu in device.requests] == [
        bytes.fromhex("05 0007 ff00"),
        bytes.fromhex("05 0007 0000"),
        bytes.fromhex("06 012c beef"),
        bytes.fromhex("10 0028 0003 06 0001 ffff 0003"),
    ]
    tids = [tid for tid, _, _ in device.requests]
    assert len(set(tids)) == 4 and 0 not in tids


async def test_an_answer_split_over_many_segments_is_put_together(
    client: MbapClient, device: RawDevice
) -> None:
    device.script = lambda request: [bytes([b]) for b in registers(request, [0x1234, 0x5678])]
    assert tuple((await client.read_holding_registers(0, count=2)).registers) == (0x1234, 0x5678)
    assert client.connected


async def test_a_late_answer_to_an_earlier_request_is_skipped(client: MbapClient, device: RawDevice) -> None:
    device.script = lambda request: []  # silent: the first request times out
    with pytest.raises(ModbusIOException, match="No response"):
        await client.read_holding_registers(0, count=1)
    first = device.requests[0]
    # its answer arrives late, in the same segment as the answer to the next request
    device.script = lambda request: [registers(first, [666]) + registers(request, [7])]
    assert tuple((await client.read_holding_registers(0, count=1)).registers) == (7,)
    # or just before it, alone
    device.script = lambda request: [registers(first, [666]), registers(request, [8])]
    assert tuple((await client.read_holding_registers(0, count=1)).registers) == (8,)


async def test_only_foreign_transaction_ids_time_out_and_keep_the_connection(
    client: MbapClient, device: RawDevice
) -> None:
    device.script = lambda request: [registers(((request[0] + 1) & 0xFFFF, request[1], request[2]), [1])]
    started = time.monotonic()
    with pytest.raises(ModbusIOException, match="No response"):
        await client.read_holding_registers(0, count=1)
    # uvloop's clock counts whole milliseconds: its timers may fire up to one before time.monotonic() says
    assert TIMEOUT - 0.01 <= time.monotonic() - started < TIMEOUT + 0.5
    assert client.connected
    device.script = echo
    assert tuple((await client.read_holding_registers(0, count=1)).registers) == (1,)


async def test_each_request_gets_its_whole_timeout_after_earlier_ones(
    client: MbapClient, device: RawDevice
) -> None:
    assert tuple((await client.read_holding_registers(0, count=1)).registers) == (1,)
    await asyncio.sleep(TIMEOUT * 0.6)  # the first request's deadline falls inside the next one's wait
    device.script = lambda request: []
    started = time.monotonic()
    with pytest.raises(ModbusIOException, match="No response"):
        await client.read_holding_registers(0, count=1)
    assert TIMEOUT - 0.01 <= time.monotonic() - started < TIMEOUT + 0.5
    device.script = echo
    for _ in range(3):  # and a quiet connection still times out after one
        await asyncio.sleep(TIMEOUT * 1.5)
        assert tuple((await client.read_holding_registers(0, count=1)).registers) == (1,)


BROKEN_HEADERS = {
    "protocol id 1": lambda r: frame(r[0], r[1], registers(r, [1])[7:], protocol=1),
    "MBAP length 0": lambda r: frame(r[0], r[1], b"", length=0),
    "MBAP length 1": lambda r: frame(r[0], r[1], b"", length=1),
    "MBAP length 0xFFFF": lambda r: frame(r[0], r[1], b"\x03\x02\x12", length=0xFFFF),
    "MBAP length 255": lambda r: frame(r[0], r[1], b"\x03\x02\x12", length=255),
    "garbage": lambda r: b"\xde\xad\xbe\xef\x00\x01\x02garbage",
}


@pytest.mark.parametrize("case", sorted(BROKEN_HEADERS))
async def test_an_unframeable_answer_closes_the_connection_at_once(
    patient: MbapClient, device: RawDevice, case: str
) -> None:
    client = patient
    device.script = lambda request: [BROKEN_HEADERS[case](request)]
    started = time.monotonic()
    with pytest.raises(ModbusIOException, match="not a Modbus TCP frame; connection closed"):
        await client.read_holding_registers(0, count=1)
    assert time.monotonic() - started < PROMPT
    assert not client.connected
    with pytest.raises(ConnectionException, match="not connected"):
        await client.read_holding_registers(0, count=1)


async def test_a_truncated_answer_times_out_and_closes(client: MbapClient, device: RawDevice) -> None:
    device.script = lambda request: [registers(request, [1, 2])[:-1]]
    with pytest.raises(ModbusIOException, match="No response"):
        await client.read_holding_registers(0, count=2)
    assert not client.connected  # the missing byte could arrive and shift every later frame


async def test_unsolicited_garbage_between_requests_closes(client: MbapClient, device: RawDevice) -> None:
    assert tuple((await client.read_holding_registers(0, count=1)).registers) == (1,)
    await device.send(b"\x00\x00\x12\x34\x00\x02\x01\x03")
    await asyncio.sleep(0.05)
    assert not client.connected


WRONG_ANSWERS = {
    "unit id 9 answered a request to unit id 1": lambda r: frame(r[0], 9, registers(r, [1])[7:]),
    "function code 4 answered a request of function code 3": lambda r: frame(r[0], r[1], b"\x04\x02\x00\x01"),
    "byte count 4 in an answer carrying 2 bytes": lambda r: frame(r[0], r[1], b"\x03\x04\x00\x01"),
    "odd byte count 3 in a register answer": lambda r: frame(r[0], r[1], b"\x03\x03\x00\x01\x02"),
    "exception response of function code 3 without a code": lambda r: frame(r[0], r[1], b"\x83"),
}


@pytest.mark.parametrize("reason", sorted(WRONG_ANSWERS))
async def test_a_wrong_but_framed_answer_is_an_error_and_keeps_the_connection(
    client: MbapClient, device: RawDevice, reason: str
) -> None:
    device.script = lambda request: [WRONG_ANSWERS[reason](request)]
    with pytest.raises(ModbusIOException, match=reason):
        await client.read_holding_registers(0, count=1, device_id=1)
    assert client.connected
    device.script = echo
    assert tuple((await client.read_holding_registers(0, count=1, device_id=1)).registers) == (1,)


async def test_exception_responses_and_broadcast_unit(client: MbapClient, device: RawDevice) -> None:
    device.script = lambda request: [frame(request[0], request[1], b"\x90\x04")]
    reply = await client.write_registers(0, [1, 2], device_id=1)
    assert reply.isError() and reply.exception_code == 4
    device.script = lambda request: [frame(request[0], 5, registers(request, [9])[7:])]
    assert tuple((await client.read_holding_registers(0, count=1, device_id=0)).registers) == (9,)


async def test_a_peer_closing_mid_request_fails_it_at_once(patient: MbapClient, device: RawDevice) -> None:
    client = patient
    device.script = lambda request: []
    request = asyncio.ensure_future(client.read_holding_registers(0, count=1))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await device.stop()
    with pytest.raises(ConnectionException, match="connection lost"):
        await request
    assert time.monotonic() - started < PROMPT
    assert not client.connected


async def test_connect_to_a_closed_port_is_false() -> None:
    c = MbapClient("127.0.0.1", free_port(), TIMEOUT)
    assert not await c.connect()
    assert not c.connected


# The session on top: what a user sees of such devices.


def _spec(port: int, timeout: float = TIMEOUT) -> DeviceSpec:
    return DeviceSpec(
        name="raw",
        tenant="t1",
        site="s1",
        driver="modbus",
        connection=ModbusConnection(host="127.0.0.1", port=port),
        points=(ModbusPoint(name="a", address=0), ModbusPoint(name="b", address=100)),
        poll_interval=1.0,
        timeout=timeout,
        profile="test",
    )


async def test_session_reports_garbage_as_connection_lost_without_waiting(device: RawDevice) -> None:
    driver = ModbusDriver()
    spec = _spec(device.port, PATIENT)
    session = driver.session(spec)
    await session.connect()
    try:
        device.script = lambda request: [b"HTTP/1.1 400 Bad Request\r\n\r\n"]
        started = time.monotonic()
        with pytest.raises(
            DeviceUnreachable, match=r"connection lost \(protocol id .*not a Modbus TCP frame"
        ):
            await session.read(driver.compile(spec))
        assert time.monotonic() - started < PROMPT
        assert not session.connected
    finally:
        await session.close()


async def test_session_faults_a_wrong_unit_id_per_request(device: RawDevice) -> None:
    driver = ModbusDriver()
    spec = _spec(device.port)
    session = driver.session(spec)
    await session.connect()
    try:
        # the block at 100 is answered by another unit id; the one at 0 is fine
        device.script = lambda r: [
            frame(r[0], 2 if r[2][1:3] == b"\x00\x64" else r[1], registers(r, [5])[7:])
        ]
        values = await session.read(driver.compile(spec))
        assert values[0] == 5
        assert isinstance(values[1], PointFault)
        assert values[1].reason.startswith("bad response:")
        assert "unit id 2 answered a request to unit id 1" in values[1].reason
        assert session.connected
    finally:
        await session.close()
