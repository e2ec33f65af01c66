"""Configuration models of the Modbus driver: one device connection (TCP or RTU) and one point.

Both are validated once, when the gateway starts; nothing here runs while polling.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from edge.sdk import PointConfig, ValueKind

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
    "acc16", "acc32", "acc64", "sunssf", "string", "bool",
]  # fmt: skip
WordOrder = Literal["big", "little"]
ByteOrder = Literal["big", "little"]
# tcp: Modbus TCP (MBAP header). rtu / ascii: a serial line. rtu-over-tcp / ascii-over-tcp: serial frames
# carried raw over TCP by a serial device server (its RS-485 side shared by every unit id behind it).
Transport = Literal["tcp", "rtu", "ascii", "rtu-over-tcp", "ascii-over-tcp"]
SERIAL_TRANSPORTS: frozenset[str] = frozenset({"rtu", "ascii"})

BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})
WRITABLE_TABLES: frozenset[str] = frozenset({"holding", "coil"})
# How many registers (or bits, for the bit tables) each type occupies; a string says its own `length`.
WIDTH: dict[str, int] = {
    "int16": 1, "uint16": 1, "acc16": 1, "sunssf": 1, "bool": 1,
    "int32": 2, "uint32": 2, "acc32": 2, "float32": 2,
    "int64": 4, "uint64": 4, "acc64": 4, "float64": 4,
}  # fmt: skip
INTEGER_TYPES: frozenset[str] = frozenset(WIDTH) - {"bool", "float32", "float64"}

MAX_ADDRESS = 65535
MAX_READ_REGISTERS = 125  # Modbus limit for fc3/fc4
MAX_READ_BITS = 2000  # Modbus limit for fc1/fc2


class ModbusConnection(BaseModel):
    """How to reach one Modbus device and how big its read requests may be.

    TCP (and RTU/ASCII over TCP through a serial device server): `host` and a numeric `port`. RTU or ASCII on a
    serial line: `transport = "rtu"` or `"ascii"`, `port` is the serial device path, plus the line settings.
    Devices with the same serial port, or the same serial device server (host and port), share one client and
    take turns on the line behind it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Transport = "tcp"
    host: str = Field(default="", description="TCP, RTU over TCP and ASCII over TCP only.")
    port: int | str = Field(default=502, description="TCP port 1..65535, or (RTU) the serial device path.")
    unit_id: int = Field(default=1, ge=0, le=247, description="Modbus unit (slave) id; 0 is broadcast.")
    baudrate: int = Field(default=19200, ge=300, le=4_000_000, description="RTU only.")
    parity: Literal["N", "E", "O"] = Field(default="E", description="RTU only; Modbus' default is even.")
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    word_order: WordOrder = Field(
        default="big",
        description="Order of the registers of 32/64-bit values, unless a point says otherwise.",
    )
    byte_order: ByteOrder = Field(
        default="big",
        description="Order of the two bytes inside each register, unless a point says otherwise.",
    )
    verify_writes: bool = Field(default=True, description="Read a written value back and compare.")
    max_registers: int = Field(default=MAX_READ_REGISTERS, ge=1, le=MAX_READ_REGISTERS)
    max_bits: int = Field(default=MAX_READ_BITS, ge=1, le=MAX_READ_BITS)
    max_gap: int = Field(
        default=8,
        ge=0,
        le=124,
        description="Unused registers (or bits) read and discarded to merge two ranges.",
    )
    coalesce: bool = Field(
        default=True,
        description="False: one request per point, for devices that refuse reads spanning several points.",
    )

    @field_validator("port")
    @classmethod
    def _check_port(cls, port: int | str, info: ValidationInfo) -> int | str:
        if info.data.get("transport", "tcp") not in SERIAL_TRANSPORTS:
            if isinstance(port, str) and port.isdigit():
                port = int(port)
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError(f"a TCP port is an integer 1..65535, not {port!r}")
        elif not isinstance(port, str) or not port:
            raise ValueError(f"a serial port is a device path such as /dev/ttyUSB0, not {port!r}")
        return port

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.transport not in SERIAL_TRANSPORTS and not self.host:
            raise ValueError(f"a Modbus {self.transport} connection needs a host")
        return self

    @property
    def is_serial(self) -> bool:
        """RTU or ASCII on a local serial port."""
        return self.transport in SERIAL_TRANSPORTS

    @property
    def is_shared_line(self) -> bool:
        """Every transport but plain TCP: the unit ids behind one port (or device server) share one line."""
        return self.transport != "tcp"

    @property
    def framing(self) -> Literal["socket", "rtu", "ascii"]:
        """How requests are framed: MBAP over TCP, or RTU / ASCII frames (on a serial port or raw over TCP)."""
        if self.transport == "tcp":
            return "socket"
        return "ascii" if self.transport.startswith("ascii") else "rtu"

    @property
    def line_key(self) -> str:
        """What identifies the shared line: the serial device path, or the device server's host:port."""
        return str(self.port) if self.is_serial else f"{self.host}:{self.port}"

    @property
    def line(self) -> tuple[str | int, ...]:
        """The line's settings: devices sharing a line must agree on them (framing, and speed on serial)."""
        if self.is_serial:
            return (self.line_key, self.framing, self.baudrate, self.parity, self.stopbits, self.bytesize)
        return (self.line_key, self.framing)


class ModbusPoint(PointConfig):
    """A point at one address of one Modbus table."""

    table: Table = "holding"
    address: int = Field(ge=0, le=MAX_ADDRESS, description="0-based protocol address (register 40001 is 0).")
    type: DataType = "uint16"
    word_order: WordOrder | None = Field(default=None, description="None: the device's word order.")
    byte_order: ByteOrder | None = Field(default=None, description="None: the device's byte order.")
    length: int | None = Field(
        default=None, ge=1, le=MAX_READ_REGISTERS, description="Registers of a string."
    )
    bit: int | None = Field(
        default=None, ge=0, le=15, description="Lowest bit of a bit (field) in a register."
    )
    bits: int = Field(default=1, ge=1, le=16, description="Width of the bit field at `bit`; 1 reads a bool.")
    labels: dict[int, str] | None = Field(default=None, description="Enumeration: raw value -> label.")
    sunspec: bool = Field(default=False, description="Report SunSpec 'not implemented' markers as faults.")
    enable_address: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ADDRESS,
        description="Holding register that enables this control (SunSpec WMaxLim_Ena): written with "
        "`enable_value` after each write of the point.",
    )
    enable_value: int = Field(default=1, ge=0, le=65535, description="What enables the control (1).")

    @property
    def choices(self) -> tuple[str, ...] | None:
        return tuple(self.labels.values()) if self.labels else None

    @property
    def value_kind(self) -> ValueKind:
        if self.type == "bool" or (self.bit is not None and self.bits == 1):
            return "bool"
        if self.type == "string" or self.labels:
            return "text"
        return "integer" if self.type in INTEGER_TYPES and not self.is_scaled else "number"

    @property
    def width(self) -> int:
        """Registers (or bits) the point occupies."""
        return (self.length or 0) if self.type == "string" else WIDTH[self.type]

    @property
    def is_bit(self) -> bool:
        return self.table in BIT_TABLES

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.table in BIT_TABLES and self.type != "bool":
            raise ValueError(
                f"a {self.table} point holds one bit: its type must be 'bool', not {self.type!r}"
            )
        if self.type == "bool" and self.table not in BIT_TABLES:
            raise ValueError(
                f"type 'bool' is for the 'coil' and 'discrete' tables; a {self.table} register is a number "
                "or a string (use `bit = 0..15` for one bit of a register)"
            )
        if (self.type == "string") != (self.length is not None):
            raise ValueError("a string needs `length` (registers), and only a string has one")
        if self.bit is not None:
            if self.type not in ("uint16", "int16", "acc16"):
                raise ValueError(f"`bit` selects bits of a 16-bit register, not of a {self.type}")
            if self.bit + self.bits > 16:
                raise ValueError(f"bits {self.bit}..{self.bit + self.bits - 1} run past bit 15")
            if self.writable:
                raise ValueError("bits inside a register cannot be written alone")
        if self.labels is not None and self.type not in INTEGER_TYPES:
            raise ValueError(f"`labels` (an enumeration) needs an integer type, not {self.type!r}")
        last = self.address + self.width - 1
        if last > MAX_ADDRESS:
            raise ValueError(
                f"a {self.type} at address {self.address} runs past the last address {MAX_ADDRESS}"
            )
        if self.writable and self.table not in WRITABLE_TABLES:
            raise ValueError(f"the {self.table} table is read-only: the point cannot be writable")
        if self.enable_address is not None and not (self.writable and self.table == "holding"):
            raise ValueError("`enable_address` is for writable holding registers (a control and its enable)")
        return self
