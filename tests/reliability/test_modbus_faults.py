"""T11, a hostile Modbus TCP device: a raw asyncio server (no pymodbus, so it can break the protocol) that
answers reads with each exception code, garbage, a wrong transaction id, MBAP lengths 0 and 0xFFFF, a
truncated frame, or nothing at all (half-open). The driver's session must turn each into a point fault or a
typed `DeviceUnreachable` within its timeout, never another exception, and read good values again once the
device behaves (after the reconnect the kernel's poller does)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator

import pytest

from drivers.modbus import ModbusConnection, ModbusDriver, ModbusPoint
from drivers.modbus.driver import ModbusSession
from edge.sdk.drivers import DeviceSpec
from edge.sdk.errors import DeviceUnreachable
from edge.sdk.points import PointFault
from tests.helpers import free_port

TIMEOUT = 0.3
GOOD = 0x1234


class HostileDevice:
    """Answers function 3 reads according to `mode`; one connection at a time is plenty for one session."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mode = "good"
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await asyncio.wait_for(reader.readexactly(7), 30)
                tid, _proto, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                answer = self._answer(tid, unit, pdu)
                if answer is not None:
                    writer.write(answer)
                    await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    def _answer(self, tid: int, unit: int, pdu: bytes) -> bytes | None:
        fc = pdu[0]
        mode = self.mode
        if mode == "good":
            body = bytes([fc, 2]) + struct.pack(">H", GOOD)
        elif mode.startswith("exception:"):
            body = bytes([fc | 0x80, int(mode.split(":")[1])])
        elif mode == "garbage":
            return b"\xde\xad\xbe\xef\x00\x01\x02garbage"
        elif mode == "wrong_tid":
            body = bytes([fc, 2]) + struct.pack(">H", GOOD)
            return struct.pack(">HHHB", (tid + 1) & 0xFFFF, 0, len(body) + 1, unit) + body
        elif mode == "mbap_len0":
            return struct.pack(">HHHB", tid, 0, 0, unit)
        elif mode == "mbap_len_ffff":
            return struct.pack(">HHHB", tid, 0, 0xFFFF, unit) + bytes([fc, 2, 0x12])
        elif mode == "truncated":
            return struct.pack(">HHHB", tid, 0, 5, unit) + bytes([fc, 2])
        elif mode == "half_open":
            return None
        else:
            raise ValueError(mode)
        return struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body


@pytest.fixture
async def device() -> AsyncIterator[HostileDevice]:
    dev = HostileDevice()
    await dev.start()
    yield dev
    await dev.stop()


# exception 2 (illegal data address) is left out: the session learns such an address as absent and stops
# reading it for its lifetime (drivers/modbus/adaptive.py), so it does not come back within a poll; see
# docs/reliability.md (T11) for that open point. test_modbus_driver.py covers exception 2 itself.
FAULTS = [f"exception:{c}" for c in (1, 3, 4, 6, 0x0A, 0x0B)]
FAULTS += ["garbage", "wrong_tid", "mbap_len0", "mbap_len_ffff", "truncated", "half_open"]


async def _connect(session: ModbusSession) -> None:
    """Connect as the kernel's poller does, retrying: on a loaded test box a loopback connect can miss the
    0.3 s timeout that the reads are held to; what T11 checks is the reads."""
    for attempt in range(5):
        try:
            await session.connect()
            return
        except DeviceUnreachable:
            if attempt == 4:
                raise
            await asyncio.sleep(0.2)


async def test_t11_every_protocol_fault_is_a_point_fault_or_unreachable_and_recovers(
    device: HostileDevice,
) -> None:
    spec = DeviceSpec(
        name="hostile",
        tenant="t1",
        site="s1",
        driver="modbus",
        connection=ModbusConnection(host="127.0.0.1", port=device.port),
        points=(ModbusPoint(name="a", address=0),),
        poll_interval=1.0,
        timeout=TIMEOUT,
        profile="test",
    )
    driver = ModbusDriver()
    plan = driver.compile(spec)
    session = driver.session(spec)
    outcomes: dict[str, str] = {}
    try:
        await _connect(session)
        assert await session.read(plan) == [GOOD]
        for fault in FAULTS:
            device.mode = fault
            started = time.monotonic()
            try:
                values = await session.read(plan)
                assert isinstance(values[0], PointFault), (fault, values)
                outcomes[fault] = f"point fault: {values[0].reason}"
            except DeviceUnreachable as exc:
                outcomes[fault] = f"unreachable: {exc}"
            took = time.monotonic() - started
            assert took <= 4 * TIMEOUT + 0.5, (fault, took)
            device.mode = "good"  # the fault clears: the kernel's poller reconnects and reads again
            await session.close()
            await _connect(session)
            assert await session.read(plan) == [GOOD], fault
    finally:
        await session.close()
    for fault, outcome in outcomes.items():
        print(f"T11 {fault}: {outcome}")
    assert set(outcomes) == set(FAULTS)
