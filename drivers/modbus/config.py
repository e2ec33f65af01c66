"""Configuration models of the Modbus driver: one device connection and one point.

Both are validated once, when the gateway starts; nothing here runs while polling.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.points import PointConfig

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "bool"]
WordOrder = Literal["big", "little"]

BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})
WRITABLE_TABLES: frozenset[str] = frozenset({"holding", "coil"})
# How many registers (or bits, for the bit tables) each type occupies.
WIDTH: dict[str, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "bool": 1}

MAX_ADDRESS = 65535
MAX_READ_REGISTERS = 125  # Modbus limit for fc3/fc4
MAX_READ_BITS = 2000  # Modbus limit for fc1/fc2


class ModbusConnection(BaseModel):
    """How to reach one Modbus TCP device and how big its read requests may be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=247, description="Modbus unit (slave) id; 0 is broadcast.")
    word_order: WordOrder = Field(
        default="big",
        description="Order of the two registers of 32-bit values, unless a point says otherwise.",
    )
    max_registers: int = Field(default=MAX_READ_REGISTERS, ge=1, le=MAX_READ_REGISTERS)
    max_bits: int = Field(default=MAX_READ_BITS, ge=1, le=MAX_READ_BITS)
    max_gap: int = Field(
        default=8,
        ge=0,
        le=124,
        description="Unused registers (or bits) read and discarded to merge two ranges.",
    )


class ModbusPoint(PointConfig):
    """A point at one address of one Modbus table."""

    table: Table = "holding"
    address: int = Field(ge=0, le=MAX_ADDRESS, description="0-based protocol address (register 40001 is 0).")
    type: DataType = "uint16"
    word_order: WordOrder | None = Field(default=None, description="None: the device's word order.")

    @property
    def width(self) -> int:
        """Registers (or bits) the point occupies."""
        return WIDTH[self.type]

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
                f"type 'bool' is for the 'coil' and 'discrete' tables; a {self.table} register is "
                "int16/uint16/int32/uint32/float32"
            )
        last = self.address + self.width - 1
        if last > MAX_ADDRESS:
            raise ValueError(
                f"a {self.type} at address {self.address} runs past the last address {MAX_ADDRESS}"
            )
        if self.writable and self.table not in WRITABLE_TABLES:
            raise ValueError(f"the {self.table} table is read-only: the point cannot be writable")
        return self
