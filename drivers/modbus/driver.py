"""The Modbus TCP driver plug-in and its per-device session (the only module here that does I/O).

The session sends one request at a time on its connection (pymodbus 3.16's server answers one request per
TCP read, so pipelining loses requests) and turns pymodbus' *returned* errors into typed ones:
exception responses and timeouts become a `PointFault` for the points of that request; a lost connection,
or a device that answered no request at all, raises `DeviceUnreachable`. pymodbus' own reconnect and retries
are off: the kernel's poller owns reconnecting with backoff and calls `connect()` again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from drivers.modbus.config import WRITABLE_TABLES, ModbusConnection, ModbusPoint, Table
from drivers.modbus.decode import encode
from drivers.modbus.planner import ModbusPlan, plan_reads
from edge.drivers import DeviceSpec, RawValue
from edge.errors import DeviceUnreachable, WriteRejected
from edge.points import PointConfig, PointFault, Scalar

EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
# Exception codes meaning "the device itself did not answer": a gateway reporting no path or no response, and
# device failure, which pymodbus' simulator (and some gateways) send for an absent unit id.
_NO_ANSWER_CODES = frozenset({4, 10, 11})
_GATEWAY_CODES = frozenset({10, 11})
_TIMEOUT = PointFault("timeout")

Reader = Callable[..., Awaitable[ModbusPDU]]


def exception_reason(code: int) -> str:
    """'modbus exception 2 (illegal data address)'."""
    return f"modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})"


_FAULTS: dict[int, PointFault] = {code: PointFault(exception_reason(code)) for code in EXCEPTION_NAMES}


class ModbusDriver:
    """The object registered under the `edge.drivers` entry point `modbus`."""

    connection_model: ClassVar[type[BaseModel]] = ModbusConnection
    point_model: ClassVar[type[PointConfig]] = ModbusPoint
    profiles_dir: ClassVar[Path] = Path(__file__).parent / "profiles"

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
            max_registers=connection.max_registers,
            max_bits=connection.max_bits,
            max_gap=connection.max_gap,
        )

    def session(self, device: DeviceSpec) -> ModbusSession:
        return ModbusSession(device)


class ModbusSession:
    """One Modbus TCP connection to one device (one unit id)."""

    def __init__(self, device: DeviceSpec) -> None:
        self._device = device.name
        self._connection = _connection(device)
        self._timeout = device.timeout
        self._client: AsyncModbusTcpClient | None = None
        self._readers: dict[Table, Reader] = {}
        _quiet_pymodbus_logging()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def connect(self) -> None:
        """(Re)open the connection; raises `DeviceUnreachable`."""
        await self.close()
        conn = self._connection
        client = AsyncModbusTcpClient(
            conn.host, port=conn.port, timeout=self._timeout, retries=0, reconnect_delay=0
        )
        if not await client.connect():  # pymodbus catches OSError and timeouts and returns False
            client.close()
            raise DeviceUnreachable(
                self._device,
                f"cannot connect to {conn.host}:{conn.port} (refused, unreachable or no answer "
                f"within {self._timeout:g} s)",
            )
        self._client = client
        self._readers = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }

    async def read(self, plan: ModbusPlan) -> list[RawValue]:
        """Values aligned with `plan.points`; raises `DeviceUnreachable` if nothing answered."""
        client = self._client_or_raise()
        out: list[RawValue] = [None] * len(plan.points)
        unit = self._connection.unit_id
        readers = self._readers
        answered = False
        last_failure = ""
        for request in plan.requests:
            try:
                response = await readers[request.table](request.start, count=request.count, device_id=unit)
            except ModbusIOException as exc:
                if not client.connected:  # pymodbus closes the socket after repeated timeouts
                    raise DeviceUnreachable(self._device, "connection lost") from exc
                fault = _TIMEOUT if "No response" in exc.string else PointFault(f"bad response: {exc.string}")
                request.fault_into(out, fault)
                last_failure = fault.reason
                continue
            except ConnectionException as exc:
                raise DeviceUnreachable(self._device, "connection lost") from exc
            if response.isError():
                code = response.exception_code
                fault = _FAULTS.get(code) or PointFault(exception_reason(code))
                request.fault_into(out, fault)
                if code in _NO_ANSWER_CODES:
                    last_failure = fault.reason
                else:
                    answered = True
                continue
            block = response.bits if request.is_bit else response.registers
            if len(block) < request.count:
                request.fault_into(out, PointFault(f"short response: {len(block)} of {request.count} values"))
            else:
                request.decode_into(block, out)
            answered = True
        if plan.requests and not answered:
            raise DeviceUnreachable(self._device, f"no request answered (last: {last_failure})")
        return out

    async def write(self, point: PointConfig, raw_value: Scalar | None) -> None:
        """fc5 for a coil, fc6 for a 16-bit register, fc16 for a 32-bit one."""
        if raw_value is None:
            raise WriteRejected(self._device, "Modbus has no release: write a value", point=point.name)
        if not isinstance(point, ModbusPoint):
            raise WriteRejected(self._device, "not a Modbus point", point=point.name)
        if point.table not in WRITABLE_TABLES:
            raise WriteRejected(self._device, f"{point.table} table is read-only", point=point.name)
        try:
            payload = encode(point, raw_value, self._connection.word_order)
        except ValueError as exc:
            raise WriteRejected(self._device, str(exc), point=point.name) from exc
        client = self._client_or_raise()
        unit = self._connection.unit_id
        try:
            if isinstance(payload, bool):
                response = await client.write_coil(point.address, payload, device_id=unit)
            elif len(payload) == 1:
                response = await client.write_register(point.address, payload[0], device_id=unit)
            else:
                response = await client.write_registers(point.address, payload, device_id=unit)
        except ModbusIOException as exc:
            reason = (
                "connection lost" if not client.connected else "no answer to the write (it may have applied)"
            )
            raise DeviceUnreachable(self._device, reason, point=point.name) from exc
        except ConnectionException as exc:
            raise DeviceUnreachable(self._device, "connection lost", point=point.name) from exc
        if response.isError():
            code = response.exception_code
            error = DeviceUnreachable if code in _GATEWAY_CODES else WriteRejected
            raise error(self._device, exception_reason(code), point=point.name)

    async def close(self) -> None:
        client, self._client = self._client, None
        self._readers = {}
        if client is not None:
            client.close()

    def _client_or_raise(self) -> AsyncModbusTcpClient:
        client = self._client
        if client is None or not client.connected:
            raise DeviceUnreachable(self._device, "not connected")
        return client


def _connection(device: DeviceSpec) -> ModbusConnection:
    connection: Any = device.connection
    if not isinstance(connection, ModbusConnection):
        raise TypeError(f"device {device.name!r}: connection is not a ModbusConnection")
    return connection


def _quiet_pymodbus_logging() -> None:
    """Raise the `pymodbus` logger to CRITICAL unless the operator configured it.

    pymodbus logs an ERROR with a hex dump of the last 20 frames on every timeout, and a WARNING on every
    failed connect: a silent device polled each second would fill the log. This driver reports each of those
    as a `PointFault` or a typed error instead, which the kernel logs once when a device goes down and once
    when it recovers. Configure the `pymodbus` logger explicitly (any level) to see its own messages again.
    """
    logger = logging.getLogger("pymodbus")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)
