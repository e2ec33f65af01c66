"""Serial lines for Modbus RTU: one client and one lock per port, shared by every device on that line.

Several unit ids on one RS-485 line must take turns: one request at a time, then the line stays quiet for the
inter-frame gap (3.5 character times; a fixed 1.75 ms above 19200 baud, as the Modbus serial spec says). The
`LineRegistry` belongs to the driver object; sessions acquire a line on connect and release it on close, and
the last release closes the serial client.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient

from drivers.modbus.config import ModbusConnection

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

    settings: tuple[str, int, str, int, int]
    client: AsyncModbusSerialClient
    gap: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class LineError(Exception):
    """The line cannot be opened, or a device asks for settings that differ from the line's."""


class LineRegistry:
    """Lines keyed by serial port path, reference-counted."""

    def __init__(self) -> None:
        self._lines: dict[str, Line] = {}

    def __len__(self) -> int:
        return len(self._lines)

    async def acquire(self, connection: ModbusConnection, response_timeout: float) -> Line:
        """The line of `connection.port`, opened if needed; raises `LineError`."""
        port = str(connection.port)
        line = self._lines.get(port)
        if line is None:
            client = AsyncModbusSerialClient(
                port,
                framer=FramerType.RTU,
                baudrate=connection.baudrate,
                bytesize=connection.bytesize,
                parity=connection.parity,
                stopbits=connection.stopbits,
                timeout=line_timeout(connection.baudrate, response_timeout),
                retries=0,
                reconnect_delay=0,
            )
            # A silent unit id must not close the shared port: pymodbus 3.16 closes a TCP client after
            # retries+3 unanswered requests but leaves a serial one open (tested in test_modbus_rtu.py).
            line = self._lines[port] = Line(connection.line, client, inter_frame_gap(connection.baudrate))
        elif line.settings != connection.line:
            raise LineError(f"{port} is already open with settings {line.settings}, not {connection.line}")
        line.users += 1
        try:
            async with line.lock:
                if not line.client.connected and not await line.client.connect():
                    raise LineError(f"cannot open serial port {port}")
        except BaseException:
            self.release(line)
            raise
        return line

    def release(self, line: Line) -> None:
        line.users -= 1
        if line.users <= 0:
            self._lines.pop(str(line.settings[0]), None)
            line.client.close()
