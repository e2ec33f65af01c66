"""The Modbus driver plug-in (TCP, RTU, ASCII, RTU/ASCII over TCP) and its per-device session (the only module
here that does I/O).

A plain Modbus TCP device gets its own connection through the lean MBAP client (`drivers.modbus.mbap`: half
the CPU of pymodbus' per read); serial lines and serial device servers (RTU/ASCII over TCP) go through
pymodbus' clients, shared per line (`drivers.modbus.lines`). Both offer the same small surface
(`mbap.ModbusClient`) and raise pymodbus' public exception types, so the session treats them alike.

The session sends one request at a time on its connection (pymodbus 3.16's server answers one request per
TCP read, so pipelining loses requests; on a serial line, or behind a serial device server, every device
shares the line's lock) and turns the client's *returned* errors into typed ones: exception responses,
timeouts and malformed answers become a `PointFault` for the points of that request; a lost connection (or
one closed because its byte stream could no longer be framed), or a device that answered no request at all,
raises `DeviceUnreachable`. Neither client reconnects or retries by itself: the kernel's poller owns
reconnecting with backoff and calls `connect()` again.

A coalesced block answered with exception 2 (illegal data address) is split in halves until the refused
addresses are found; the session remembers them (`adaptive.Learned`) and later cycles read around them.
A successful write is read back and compared (`verify_writes`, on by default).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel
from pymodbus.exceptions import ConnectionException, ModbusIOException

from drivers.modbus.adaptive import AdjustedPlan, Learned, adjust_requests, split_request
from drivers.modbus.config import WRITABLE_TABLES, ModbusConnection, ModbusPoint, Table
from drivers.modbus.discovery import discover
from drivers.modbus.encode import encode, raw_range
from drivers.modbus.errors import (
    FAULTS,
    GATEWAY_CODES,
    NO_ANSWER_CODES,
    TIMEOUT,
    exception_reason,
    fault_for,
    quiet_pymodbus_logging,
)
from drivers.modbus.lines import Line, LineError, LineRegistry, describe
from drivers.modbus.mbap import MbapClient, ModbusClient, ModbusReply
from drivers.modbus.planner import ModbusPlan, ReadRequest, plan_reads
from edge.sdk import (
    DeviceSpec,
    DeviceUnreachable,
    DiscoveredDevice,
    PointConfig,
    PointFault,
    RawValue,
    Scalar,
    WriteRejected,
)

Reader = Callable[..., Awaitable[ModbusReply]]


class ModbusDriver:
    """The object registered under the `edge.drivers` entry point `modbus`.

    It owns the registry of serial lines, so RTU devices on one port share one client and one lock."""

    connection_model: ClassVar[type[BaseModel]] = ModbusConnection
    point_model: ClassVar[type[PointConfig]] = ModbusPoint
    profiles_dir: ClassVar[Path] = Path(__file__).parent / "profiles"

    def __init__(self) -> None:
        self.lines = LineRegistry()

    def raw_range(self, point: PointConfig) -> tuple[float, float] | None:
        """The raw numbers the point's register type holds (`edge.sdk.SupportsValueRange`)."""
        return raw_range(point) if isinstance(point, ModbusPoint) else None

    def compile(self, device: DeviceSpec) -> ModbusPlan:
        """The device's read plan (pure). Raises `TypeError` if the kernel did not validate with our models."""
        connection = _connection(device)
        points = []
        for point in device.points:
            if not isinstance(point, ModbusPoint):
                raise TypeError(f"device {device.name!r}: point {point.name!r} is not a ModbusPoint")
            points.append(point)
        return plan_reads(
            points,
            default_word_order=connection.word_order,
            default_byte_order=connection.byte_order,
            max_registers=connection.max_registers,
            max_bits=connection.max_bits,
            max_gap=connection.max_gap,
            coalesce=connection.coalesce,
        )

    def session(self, device: DeviceSpec) -> ModbusSession:
        return ModbusSession(device, self.lines)

    async def discover(
        self, target: dict[str, Any], progress: Callable[[str], None]
    ) -> list[DiscoveredDevice]:
        """Scan unit ids behind a Modbus TCP host, a serial device server or a serial port for SunSpec devices
        (see `drivers.modbus.discovery`)."""
        return await discover(target, progress)


_RELEARN_EVERY = 1000  # reads: then refused addresses are tried again (a device may have been reconfigured)


class ModbusSession:
    """One device (one unit id): its own TCP connection, or its turn on a shared line (serial port or serial
    device server)."""

    def __init__(self, device: DeviceSpec, lines: LineRegistry | None = None) -> None:
        self._device = device.name
        self._connection = _connection(device)
        self._timeout = device.timeout
        self._lines = lines if lines is not None else LineRegistry()
        self._line: Line | None = None
        self._client: ModbusClient | None = None
        self._lock = asyncio.Lock()
        self._gap = 0.0
        self._readers: dict[Table, Reader] = {}
        self.learned = Learned()
        self._adjusted: tuple[ModbusPlan, Learned, AdjustedPlan] | None = None
        self._reads = 0
        quiet_pymodbus_logging()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def connect(self) -> None:
        """(Re)open the connection, or join the shared line; raises `DeviceUnreachable`."""
        await self.close()
        conn = self._connection
        client: ModbusClient
        if conn.is_shared_line:
            try:
                line = await self._lines.acquire(conn, self._timeout)
            except LineError as exc:
                raise DeviceUnreachable(self._device, str(exc)) from exc
            self._line, client, self._lock, self._gap = line, line.client, line.lock, line.gap
        else:
            client = MbapClient(conn.host, int(conn.port), self._timeout)
            if not await client.connect():  # refused, unreachable or timed out: False, as pymodbus does
                client.close()
                raise DeviceUnreachable(
                    self._device,
                    f"cannot connect to {conn.host}:{conn.port} (refused, unreachable or no answer "
                    f"within {self._timeout:g} s)",
                )
            self._lock, self._gap = asyncio.Lock(), 0.0
        self._client = client
        self._readers = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }

    async def read(self, plan: ModbusPlan) -> list[RawValue]:
        """Values aligned with `plan.points`; raises `DeviceUnreachable` if nothing answered."""
        self._client_or_raise()
        out: list[RawValue] = [None] * len(plan.points)
        adjusted = self._adjust(plan)
        for index in adjusted.unreadable:
            out[index] = FAULTS[2]
        answered = False
        last_failure = ""
        for request in adjusted.requests:
            response = await self._transact(request)
            if isinstance(response, PointFault):
                request.fault_into(out, response)
                last_failure = response.reason
            elif response.isError():
                code = response.exception_code
                if code == 2:
                    await self._bisect(plan.points, request, out)
                    answered = True
                    continue
                fault = fault_for(code)
                request.fault_into(out, fault)
                if code in NO_ANSWER_CODES:
                    last_failure = fault.reason
                else:
                    answered = True
            else:
                _decode_into(request, response, out)
                answered = True
        if adjusted.requests and not answered:
            raise DeviceUnreachable(self._device, self._nothing_answered(last_failure))
        return out

    def _nothing_answered(self, last_failure: str) -> str:
        """The reason when no request was answered, with what a technician should check first.

        Over TCP the connection itself is up, so the usual cause is a unit id the device (or the gateway in
        front of its RS-485 side) does not serve: gateways answer exception 4/10/11 for it, devices stay silent."""
        conn = self._connection
        reason = f"no request answered (last: {last_failure})"
        if conn.transport == "tcp":
            return (
                f"{reason}: {conn.host}:{conn.port} accepts connections, so check the unit id "
                f"(connection.unit_id = {conn.unit_id}) and that the device behind it is powered"
            )
        if not conn.is_serial:
            return (
                f"{reason} from {describe(conn)}: the device server accepts connections, so check the unit id "
                f"(connection.unit_id = {conn.unit_id}), the framing ({conn.transport}) and the serial "
                "settings configured in the device server, and the wiring behind it"
            )
        return (
            f"{reason} on {conn.port}: check the unit id (connection.unit_id = {conn.unit_id}), the line "
            f"settings ({conn.baudrate} baud, {conn.bytesize}{conn.parity}{conn.stopbits}, {conn.framing}) "
            "and the wiring"
        )

    def _adjust(self, plan: ModbusPlan) -> AdjustedPlan:
        self._reads += 1
        if self._reads % _RELEARN_EVERY == 0:
            self.learned = Learned()
        cached = self._adjusted
        if cached is not None and cached[0] is plan and cached[1] is self.learned:
            return cached[2]
        adjusted = adjust_requests(plan, self.learned)
        self._adjusted = (plan, self.learned, adjusted)
        return adjusted

    async def _bisect(self, points: Sequence[ModbusPoint], request: ReadRequest, out: list[RawValue]) -> bool:
        """Read a block refused with exception 2 in halves, learning which addresses fail.

        Returns True if a refused point (or another failure) explains the refusal. Depth is log2(slots)."""
        halves = split_request(request, points)
        if halves is None:
            self.learned = self.learned.with_bad(request.table, request.start, request.end)
            request.fault_into(out, FAULTS[2])
            return True
        explained = False
        for half in halves:
            response = await self._transact(half)
            if isinstance(response, PointFault):
                half.fault_into(out, response)
                explained = True
            elif response.isError() and response.exception_code == 2:
                explained = await self._bisect(points, half, out) or explained
            elif response.isError():
                code = response.exception_code
                half.fault_into(out, fault_for(code))
                explained = True
            else:
                _decode_into(half, response, out)
        left, right = halves
        if explained:  # a refused point inside explains it; a refused gap too would show up next cycle
            return True
        if left.end < right.start:  # both halves answer: the bridged gap is refused; never read it again
            self.learned = self.learned.with_bad(request.table, left.end, right.start)
        elif left.end == right.start:  # adjacent halves answer: the device refuses to span them
            self.learned = self.learned.with_cut(request.table, right.start)
        return False

    async def _transact(self, request: ReadRequest) -> ModbusReply | PointFault:
        """One read request under the line's lock; a timeout or garbled answer comes back as a fault."""
        client = self._client_or_raise()
        try:
            async with self._lock:
                await self._rejoin(client)
                try:
                    return await self._readers[request.table](
                        request.start, count=request.count, device_id=self._connection.unit_id
                    )
                finally:
                    if self._gap:
                        await asyncio.sleep(self._gap)
        except ModbusIOException as exc:
            # pymodbus closes the socket after repeated timeouts, the MBAP client when framing is lost
            if not client.connected:  # the MBAP client says why it could no longer frame the stream
                cause = (
                    "" if "No response" in exc.string else f" ({exc.string.removeprefix('[Input/Output] ')})"
                )
                raise DeviceUnreachable(self._device, f"connection lost{cause}") from exc
            return TIMEOUT if "No response" in exc.string else PointFault(f"bad response: {exc.string}")
        except ConnectionException as exc:
            raise DeviceUnreachable(self._device, "connection lost") from exc

    async def write(self, point: PointConfig, raw_value: Scalar | None) -> None:
        """fc5 for a coil, fc6 for a 16-bit register, fc16 for wider ones; then read back and compare. A point
        with an `enable_address` (a SunSpec control and its enable register) then writes `enable_value` there."""
        if raw_value is None:
            raise WriteRejected(self._device, "Modbus has no release: write a value", point=point.name)
        if not isinstance(point, ModbusPoint):
            raise WriteRejected(self._device, "not a Modbus point", point=point.name)
        if point.table not in WRITABLE_TABLES:
            raise WriteRejected(self._device, f"{point.table} table is read-only", point=point.name)
        conn = self._connection
        try:
            payload = encode(point, raw_value, conn.word_order, conn.byte_order)
        except ValueError as exc:
            raise WriteRejected(self._device, str(exc), point=point.name) from exc
        await self._write_verified(point.name, point.table, point.address, payload)
        if point.enable_address is not None:  # the value first, so the device never enables an old one
            enable = point.enable_address
            await self._write_verified(
                point.name, "holding", enable, [point.enable_value], f"enable register {enable}: "
            )

    async def _write_verified(
        self, name: str, table: Table, address: int, payload: list[int] | bool, what: str = ""
    ) -> None:
        """One write request, its exception mapped to a typed error naming point `name` (and `what` was
        written, for an enable register), then the read-back."""
        client = self._client_or_raise()
        unit = self._connection.unit_id
        try:
            async with self._lock:
                await self._rejoin(client)
                try:
                    if isinstance(payload, bool):
                        response = await client.write_coil(address, payload, device_id=unit)
                    elif len(payload) == 1:
                        response = await client.write_register(address, payload[0], device_id=unit)
                    else:
                        response = await client.write_registers(address, payload, device_id=unit)
                finally:
                    if self._gap:
                        await asyncio.sleep(self._gap)
        except ModbusIOException as exc:
            reason = (
                "connection lost" if not client.connected else "no answer to the write (it may have applied)"
            )
            raise DeviceUnreachable(self._device, what + reason, point=name) from exc
        except ConnectionException as exc:
            raise DeviceUnreachable(self._device, "connection lost", point=name) from exc
        if response.isError():
            code = response.exception_code
            error = DeviceUnreachable if code in GATEWAY_CODES else WriteRejected
            raise error(self._device, what + exception_reason(code), point=name)
        if self._connection.verify_writes:
            await self._read_back(name, table, address, payload, what)

    async def _read_back(
        self, name: str, table: Table, address: int, payload: list[int] | bool, what: str
    ) -> None:
        """Raise `WriteRejected` if the device holds something else than what was written.

        A read-back that fails (write-only register, timeout) proves nothing either way and is ignored."""
        width = 1 if isinstance(payload, bool) else len(payload)
        response = await self._transact(ReadRequest(table, address, width, ()))
        if isinstance(response, PointFault) or response.isError():
            return
        got: list[int] | bool = (
            bool(response.bits[0]) if isinstance(payload, bool) else list(response.registers[:width])
        )
        if got != payload:
            raise WriteRejected(self._device, f"{what}read back {got}, expected {payload}", point=name)

    async def close(self) -> None:
        client, self._client = self._client, None
        line, self._line = self._line, None
        self._readers = {}
        if line is not None:
            self._lines.release(line)
        elif client is not None:
            client.close()

    async def _rejoin(self, client: ModbusClient) -> None:
        """Reopen a device server's shared connection that pymodbus closed after another unit's timeouts, so
        one silent unit id does not take its neighbours down. Called under the line's lock."""
        if self._line is not None and not client.connected and not await client.connect():
            raise DeviceUnreachable(self._device, f"cannot reconnect to {describe(self._connection)}")

    def _client_or_raise(self) -> ModbusClient:
        client = self._client
        if client is None or (self._line is None and not client.connected):
            raise DeviceUnreachable(self._device, "not connected")
        return client


def _decode_into(request: ReadRequest, response: ModbusReply, out: list[RawValue]) -> None:
    block = response.bits if request.is_bit else response.registers
    if len(block) < request.count:
        request.fault_into(out, PointFault(f"short response: {len(block)} of {request.count} values"))
    else:
        request.decode_into(block, out)


def _connection(device: DeviceSpec) -> ModbusConnection:
    connection: Any = device.connection
    if not isinstance(connection, ModbusConnection):
        raise TypeError(f"device {device.name!r}: connection is not a ModbusConnection")
    return connection
