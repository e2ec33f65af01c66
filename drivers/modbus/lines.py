"""Shared lines: one client and one lock per serial port or serial device server, shared by its unit ids.

Several unit ids on one RS-485 line must take turns: one request at a time, then the line stays quiet for the
inter-frame gap (3.5 character times; a fixed 1.75 ms above 19200 baud, as the Modbus serial spec says). A
serial device server (RTU or ASCII frames carried raw over TCP) fronts such a line: its unit ids share one TCP
connection and take turns too, and the server keeps the serial timing itself (no gap here). The
`LineRegistry` belongs to the driver object; sessions acquire a line on connect and release it on close, and
the last release closes the client. `open_client` builds the pymodbus client of any transport; discovery uses
it too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient

from drivers.modbus.config import ModbusConnection

_FRAMERS = {"socket": FramerType.SOCKET, "rtu": FramerType.RTU, "ascii": FramerType.ASCII}

_BITS_PER_CHAR = 11  # start + 8 data + parity + stop (or no parity and 2 stops), as Modbus RTU frames are
_MAX_FRAME = 256  # bytes of the longest RTU frame


def char_time(baudrate: int) -> float:
    return _BITS_PER_CHAR / baudrate


def inter_frame_gap(baudrate: int) -> float:
    """Seconds of silence between frames: 3.5 characters, at least 1.75 ms (fixed above 19200 baud)."""
    return 0.00175 if baudrate > 19200 else 3.5 * char_time(baudrate)


def line_timeout(baudrate: int, response_timeout: float) -> float:
    """A request's timeout: the device's response time plus sending the longest frame both ways."""
    return response_timeout + 2 * _MAX_FRAME * char_time(baudrate)


@dataclass(eq=False)
class Line:
    """One serial port in use: its client, the lock that keeps one request at a time on it, its users."""

    settings: tuple[str | int, ...]
    client: ModbusBaseClient
    gap: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class LineError(Exception):
    """The line cannot be opened, or a device asks for settings that differ from the line's."""


def open_client(connection: ModbusConnection, timeout: float) -> ModbusBaseClient:
    """A pymodbus client (not connected) for `connection`, with pymodbus' own retries and reconnect off:
    the kernel's poller owns reconnecting."""
    framer = _FRAMERS[connection.framing]
    if connection.is_serial:
        return AsyncModbusSerialClient(
            str(connection.port),
            framer=framer,
            baudrate=connection.baudrate,
            bytesize=connection.bytesize,
            parity=connection.parity,
            stopbits=connection.stopbits,
            timeout=line_timeout(connection.baudrate, timeout),
            retries=0,
            reconnect_delay=0,
        )
    return AsyncModbusTcpClient(
        connection.host,
        port=int(connection.port),
        framer=framer,
        timeout=timeout,
        retries=0,
        reconnect_delay=0,
    )


def describe(connection: ModbusConnection) -> str:
    """Where the device is, for messages: "10.0.0.5:502", "RTU over TCP 10.0.0.9:4001", "RTU /dev/ttyUSB0"."""
    if connection.transport == "tcp":
        return f"{connection.host}:{connection.port}"
    kind = connection.framing.upper()
    if connection.is_serial:
        return f"{kind} {connection.port}"
    return f"{kind} over TCP {connection.host}:{connection.port}"


class LineRegistry:
    """Lines keyed by serial port path or device server host:port, reference-counted."""

    def __init__(self) -> None:
        self._lines: dict[str, Line] = {}

    def __len__(self) -> int:
        return len(self._lines)

    async def acquire(self, connection: ModbusConnection, response_timeout: float) -> Line:
        """The line of `connection` (serial port or device server), opened if needed; raises `LineError`."""
        key = connection.line_key
        line = self._lines.get(key)
        if line is None:
            # A silent unit id must not close a shared serial port: pymodbus 3.16 closes a TCP client after
            # retries+3 unanswered requests but leaves a serial one open (tested in test_modbus_rtu.py); a
            # device server's connection it does close, and the next request's session reconnects it.
            gap = inter_frame_gap(connection.baudrate) if connection.is_serial else 0.0
            client = open_client(connection, response_timeout)
            line = self._lines[key] = Line(connection.line, client, gap)
        elif line.settings != connection.line:
            raise LineError(f"{key} is already open with settings {line.settings}, not {connection.line}")
        line.users += 1
        try:
            async with line.lock:
                if not line.client.connected and not await line.client.connect():
                    raise LineError(f"cannot open {_what(connection)}")
        except BaseException:
            self.release(line)
            raise
        return line

    def release(self, line: Line) -> None:
        line.users -= 1
        if line.users <= 0:
            self._lines.pop(str(line.settings[0]), None)
            line.client.close()


def _what(connection: ModbusConnection) -> str:
    if connection.is_serial:
        return f"serial port {connection.port}"
    return f"a connection to the serial device server {connection.host}:{connection.port}"
