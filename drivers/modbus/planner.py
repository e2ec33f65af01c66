"""The read planner: points in, Modbus read requests out. Pure and deterministic; no I/O.

Points are grouped per table and sorted by address. Neighbouring and overlapping ranges are merged into one
request, and so are ranges separated by at most `max_gap` unused registers (or bits); a request never exceeds
`max_registers` registers (or `max_bits` bits), and a 32-bit value is never split across two requests.

Each request carries its precompiled slots `(index into plan.points, offset in the block, decoder)`, so
decoding a response is one function call per point (`ReadRequest.decode_into`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from drivers.modbus.config import (
    BIT_TABLES,
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    ByteOrder,
    ModbusPoint,
    Table,
    WordOrder,
)
from drivers.modbus.decode import Decoder, point_decoder
from edge.sdk import PointFault

_TABLE_ORDER: tuple[Table, ...] = ("holding", "input", "coil", "discrete")


class Slot(NamedTuple):
    """Where one point's value sits in a request's response."""

    point_index: int  # into ModbusPlan.points (and the list `read` returns)
    offset: int  # registers (or bits) from the request's start
    decode: Decoder


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read (fc1/2/3/4) and the points its response feeds."""

    table: Table
    start: int
    count: int
    slots: tuple[Slot, ...]

    @property
    def is_bit(self) -> bool:
        return self.table in BIT_TABLES

    @property
    def end(self) -> int:
        """One past the last address read."""
        return self.start + self.count

    def decode_into(self, block: Sequence[Any], out: list[Any]) -> None:
        """Decode every slot of this request from its response `block` into `out` (the hot path)."""
        for index, offset, decode in self.slots:
            out[index] = decode(block, offset)

    def fault_into(self, out: list[Any], fault: PointFault) -> None:
        """Mark every point of this request as failed."""
        for slot in self.slots:
            out[slot.point_index] = fault


@dataclass(frozen=True, slots=True)
class ModbusPlan:
    """A device's compiled read plan. `points` keeps the configured order: `read` returns values in it."""

    points: tuple[ModbusPoint, ...]
    requests: tuple[ReadRequest, ...]


def plan_reads(
    points: Sequence[ModbusPoint],
    *,
    default_word_order: WordOrder = "big",
    default_byte_order: ByteOrder = "big",
    max_registers: int = MAX_READ_REGISTERS,
    max_bits: int = MAX_READ_BITS,
    max_gap: int = 8,
    coalesce: bool = True,
) -> ModbusPlan:
    """Compile points into as few read requests as the limits allow.

    With `coalesce=False` every point is its own request (devices that refuse multi-point reads).
    Raises `ValueError` for limits outside what Modbus allows, or a point wider than `max_registers`.
    """
    if not 1 <= max_registers <= MAX_READ_REGISTERS:
        raise ValueError(f"max_registers must be 1..{MAX_READ_REGISTERS}, not {max_registers}")
    if not 1 <= max_bits <= MAX_READ_BITS:
        raise ValueError(f"max_bits must be 1..{MAX_READ_BITS}, not {max_bits}")
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, not {max_gap}")
    by_table: dict[Table, list[tuple[int, int, int]]] = {}
    for index, point in enumerate(points):
        limit = max_bits if point.is_bit else max_registers
        if point.width > limit:
            raise ValueError(
                f"point {point.name!r} ({point.type}) needs {point.width} registers but max_registers is {limit}"
            )
        by_table.setdefault(point.table, []).append((point.address, point.width, index))
    requests: list[ReadRequest] = []
    for table in _TABLE_ORDER:
        ranges = by_table.get(table)
        if ranges:
            limit = max_bits if table in BIT_TABLES else max_registers
            blocks = (
                _coalesce(sorted(ranges), limit, max_gap)
                if coalesce
                else [(a, a + w, [(a, w, i)]) for a, w, i in sorted(ranges)]
            )
            for start, end, members in blocks:
                slots = tuple(
                    Slot(
                        index,
                        address - start,
                        point_decoder(points[index], default_word_order, default_byte_order),
                    )
                    for address, _width, index in members
                )
                requests.append(ReadRequest(table, start, end - start, slots))
    return ModbusPlan(points=tuple(points), requests=tuple(requests))


def _coalesce(
    ranges: list[tuple[int, int, int]], limit: int, max_gap: int
) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """Greedy merge of (address, width, index) sorted by address into (start, end, members) blocks.

    Greedy is optimal here: with ranges sorted by start, extending the open block whenever the gap and the
    size limit allow yields the fewest blocks.
    """
    blocks: list[tuple[int, int, list[tuple[int, int, int]]]] = []
    address, width, _ = ranges[0]
    start, end, members = address, address + width, [ranges[0]]
    for item in ranges[1:]:
        address, width, _ = item
        new_end = max(end, address + width)
        if address - end <= max_gap and new_end - start <= limit:
            end = new_end
            members.append(item)
        else:
            blocks.append((start, end, members))
            start, end, members = address, address + width, [item]
    blocks.append((start, end, members))
    return blocks
