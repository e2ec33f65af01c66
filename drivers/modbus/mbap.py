"""A lean Modbus TCP client: MBAP frames over one asyncio connection, for the session's plain `tcp` devices.

Why it exists: pymodbus' `AsyncModbusTcpClient` spends about twice the CPU of the request and answer themselves
on each read (its transaction manager, framer, trace hooks and log calls): a 50-register read costs it 86.8 µs of
CPU, this client 41.6 µs, bare asyncio streams 39.4 µs (`python -m bench.modbus_client`, drivers/modbus/README.md).
At a site's rate that was the largest per-poll cost left. This client builds a read request with one `struct`
call and decodes the answer straight into a tuple of registers or a list of bits. Serial lines, RTU/ASCII over
TCP and discovery keep pymodbus.

It has the small surface the session uses of a pymodbus client (`ModbusClient` below: connect, connected,
close, read_*, write_*), its replies answer `isError()`, `exception_code`, `registers` and `bits`, and its
errors are pymodbus' public exception types, so the session handles both clients alike:

- no answer within the timeout: `ModbusIOException("No response ...")`;
- a well-framed answer that is wrong (exception without a code, other unit id or function code, byte count
  that does not fit the frame): `ModbusIOException` with the reason; the connection stays up;
- a stream that can no longer be framed (protocol id not 0, an MBAP length outside 2..254, a frame still cut
  short when the timeout ends): the connection is closed, so the session reports "connection lost" and the
  kernel's poller reconnects;
- a lost connection: `ConnectionException`.

A well-framed answer with another transaction id (typically the late answer to a request that timed out) is
skipped, and the request keeps waiting for its own. One request at a time: the caller serialises (the session
holds its lock around each request), since devices, and pymodbus' own server, drop pipelined requests.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any, Protocol, cast

from pymodbus.exceptions import ConnectionException, ModbusIOException

__all__ = ["MbapClient", "ModbusClient", "ModbusReply", "Reply"]


class ModbusReply(Protocol):
    """What the session reads of an answer; pymodbus' `ModbusPDU` and `Reply` both have it."""

    @property
    def registers(self) -> Sequence[int]: ...

    @property
    def bits(self) -> Sequence[bool]: ...

    @property
    def exception_code(self) -> int: ...

    def isError(self) -> bool: ...  # pymodbus' spelling


class ModbusClient(Protocol):
    """What the session uses of a client; pymodbus' clients and `MbapClient` both have it."""

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> bool: ...

    def close(self) -> None: ...

    def read_holding_registers(
        self, address: int, *, count: int = ..., device_id: int = ...
    ) -> Awaitable[ModbusReply]: ...

    def read_input_registers(
        self, address: int, *, count: int = ..., device_id: int = ...
    ) -> Awaitable[ModbusReply]: ...

    def read_coils(
        self, address: int, *, count: int = ..., device_id: int = ...
    ) -> Awaitable[ModbusReply]: ...

    def read_discrete_inputs(
        self, address: int, *, count: int = ..., device_id: int = ...
    ) -> Awaitable[ModbusReply]: ...

    def write_coil(self, address: int, value: bool, *, device_id: int = ...) -> Awaitable[ModbusReply]: ...

    def write_register(self, address: int, value: int, *, device_id: int = ...) -> Awaitable[ModbusReply]: ...

    def write_registers(
        self, address: int, values: list[int], *, device_id: int = ...
    ) -> Awaitable[ModbusReply]: ...


class Reply:
    """One answer: the registers or bits read, or the exception code (0: none)."""

    __slots__ = ("bits", "exception_code", "registers")

    def __init__(
        self, registers: Sequence[int] = (), bits: Sequence[bool] = (), exception_code: int = 0
    ) -> None:
        self.registers = registers
        self.bits = bits
        self.exception_code = exception_code

    def isError(self) -> bool:  # pymodbus' spelling, so the session reads either client's answers
        return self.exception_code != 0

    def __repr__(self) -> str:
        return (
            f"Reply(registers={self.registers!r}, bits={self.bits!r}, exception_code={self.exception_code})"
        )


_HEADER = struct.Struct(">HHHB")  # transaction id, protocol id (0), length (unit id + PDU), unit id
_HEADER_SIZE = 7
_REQUEST = struct.Struct(">HHHBBHH")  # a whole request of fc 1-6: header, function code, address, count/value
_WRITE_MULTIPLE = struct.Struct(">HHHBBHHB")  # fc 16 up to its byte count; the registers follow
_MAX_LENGTH = 254  # MBAP length: unit id + the longest PDU (253 bytes)
_REGISTERS = tuple(struct.Struct(f">{n}H") for n in range(126))  # by register count: one unpack per answer
_BITS = tuple(tuple(bool(byte >> i & 1) for i in range(8)) for byte in range(256))  # least significant first
_WRITTEN = Reply()
_COIL_ON = 0xFF00


class MbapClient(asyncio.Protocol):
    """One Modbus TCP connection to `host:port`; `timeout` bounds the connect and each request (seconds)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self._host, self._port, self._timeout = host, port, timeout
        self._transport: asyncio.Transport | None = None
        self._rest = b""  # bytes of a frame not yet complete
        self._tid = 0
        self._waiter: asyncio.Future[Reply] | None = None
        self._unit = 0  # what the request in flight asked, to check its answer
        self._fc = 0
        self._deadline = 0.0  # loop time by which the request in flight must be answered
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def connected(self) -> bool:
        transport = self._transport
        return transport is not None and not transport.is_closing()

    async def connect(self) -> bool:
        """Open the connection; False if refused, unreachable or not open within the timeout (as pymodbus)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                await loop.create_connection(lambda: self, self._host, self._port)
        except (OSError, TimeoutError):
            self.close()
            return False
        return True

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self._fail(ConnectionException("connection closed"))

    # fc 1-4 and 5, 6, 16: plain functions returning the coroutine, one frame less per request.
    def read_coils(self, address: int, *, count: int = 1, device_id: int = 1) -> Coroutine[Any, Any, Reply]:
        return self._send(device_id, 1, address, count)

    def read_discrete_inputs(
        self, address: int, *, count: int = 1, device_id: int = 1
    ) -> Coroutine[Any, Any, Reply]:
        return self._send(device_id, 2, address, count)

    def read_holding_registers(
        self, address: int, *, count: int = 1, device_id: int = 1
    ) -> Coroutine[Any, Any, Reply]:
        return self._send(device_id, 3, address, count)

    def read_input_registers(
        self, address: int, *, count: int = 1, device_id: int = 1
    ) -> Coroutine[Any, Any, Reply]:
        return self._send(device_id, 4, address, count)

    def write_coil(self, address: int, value: bool, *, device_id: int = 1) -> Coroutine[Any, Any, Reply]:
        return self._send(device_id, 5, address, _COIL_ON if value else 0)

    def write_register(self, address: int, value: int, *, device_id: int = 1) -> Coroutine[Any, Any, Reply]:
        return self._send(device_id, 6, address, value)

    def write_registers(
        self, address: int, values: list[int], *, device_id: int = 1
    ) -> Coroutine[Any, Any, Reply]:
        return self._send(device_id, 16, address, len(values), values)

    async def _send(self, unit: int, fc: int, address: int, value: int, values: Sequence[int] = ()) -> Reply:
        """Send one request (fc 1-6: address and count or value; fc 16: address, count and `values`) and wait
        for its answer, at most `timeout` seconds."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionException("not connected")
        if self._waiter is not None:
            raise RuntimeError("MbapClient: a request is already in flight (the caller serialises requests)")
        tid = self._tid = self._tid % 0xFFFF + 1  # 1..65535, never 0; taken only once the request can go
        if fc == 16:
            size = 2 * value
            head = _WRITE_MULTIPLE.pack(tid, 0, 7 + size, unit, 16, address, value, size)
            frame = head + struct.pack(f">{value}H", *values)
        else:
            frame = _REQUEST.pack(tid, 0, 6, unit, fc, address, value)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Reply] = loop.create_future()
        self._waiter, self._unit, self._fc = waiter, unit, fc
        self._deadline = loop.time() + self._timeout
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._deadline, self._watch)
        transport.write(frame)
        try:
            return await waiter
        finally:
            self._waiter = None

    def _watch(self) -> None:
        """Fail the request in flight once its deadline has passed, or wait on until it does.

        One timer serves every request of a busy connection (re-armed for the request in flight when it
        fires, left off while idle): a timer per request, armed and cancelled, was a fifth of this client's
        CPU per read."""
        self._watchdog = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        loop = waiter.get_loop()
        if loop.time() < self._deadline:
            self._watchdog = loop.call_at(self._deadline, self._watch)
            return
        waiter.set_exception(ModbusIOException(f"No response received within {self._timeout:g} s"))
        if self._rest:  # a frame cut short: what follows cannot be framed any more
            self._drop()

    # asyncio.Protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's are not subclasses of asyncio.Transport)
        self._transport, self._rest = cast(asyncio.Transport, transport), b""

    def connection_lost(self, exc: Exception | None) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            return  # a connection closed earlier, reported after `connect()` opened its successor
        self._transport = None
        self._fail(ConnectionException("connection lost"))

    def data_received(self, data: bytes) -> None:
        if self._rest:
            data = self._rest + data
        size, at = len(data), 0
        while size - at >= _HEADER_SIZE:
            tid, protocol, length, unit = _HEADER.unpack_from(data, at)
            if protocol or not 2 <= length <= _MAX_LENGTH:
                self._drop(f"protocol id {protocol}, MBAP length {length}: not a Modbus TCP frame")
                return
            end = at + 6 + length
            if end > size:
                break
            if tid == self._tid:  # otherwise a late answer to a request that timed out: skipped
                self._answer(unit, data, at + _HEADER_SIZE, end)
            at = end
        self._rest = data[at:]

    def _answer(self, unit: int, data: bytes, at: int, end: int) -> None:
        """Hand the PDU `data[at:end]` to the request in flight, decoded or as an error."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        reply = self._decode(unit, data, at, end)
        if isinstance(reply, str):
            waiter.set_exception(ModbusIOException(reply))
        else:
            waiter.set_result(reply)

    def _decode(self, unit: int, data: bytes, at: int, end: int) -> Reply | str:
        """The answer to the request in flight, or why it is not one."""
        fc, asked = data[at], self._fc
        if self._unit and unit != self._unit:  # unit id 0 (broadcast) accepts whoever answers, as pymodbus
            return f"unit id {unit} answered a request to unit id {self._unit}"
        if fc == asked | 0x80:
            if end - at != 2 or not data[at + 1]:
                return f"exception response of function code {asked} without a code"
            return Reply(exception_code=data[at + 1])
        if fc != asked:
            return f"function code {fc} answered a request of function code {asked}"
        if asked > 4:
            return _WRITTEN if end - at == 5 else f"write answer of {end - at} bytes, expected 5"
        count = data[at + 1] if end - at >= 2 else -1
        if count != end - at - 2:
            return f"byte count {count} in an answer carrying {end - at - 2} bytes"
        if asked >= 3:
            if count % 2:
                return f"odd byte count {count} in a register answer"
            return Reply(registers=_REGISTERS[count // 2].unpack_from(data, at + 2))
        return Reply(bits=[bit for byte in data[at + 2 : end] for bit in _BITS[byte]])

    def _drop(self, reason: str = "") -> None:
        """The stream cannot be framed any more: fail the request in flight with `reason`, close."""
        if reason:
            self._fail(ModbusIOException(f"{reason}; connection closed"))
        self._rest = b""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()  # nothing worth sending is queued, and the peer is not trusted

    def _fail(self, error: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
