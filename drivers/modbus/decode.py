"""Register decoding: pure functions, no I/O (`encode.py` holds the inverse, for writes).

Modbus sends each register big-endian, but devices vary: `byte_order = "little"` swaps the two bytes inside
every register, and `word_order` says which register of a 32/64-bit value comes first ("big": the most
significant). Decoders are composed once per point when the read plan is compiled (`point_decoder`), so polling
costs one plain call per point: the common 16/32-bit big-endian cases are single small functions, and the
extras (SunSpec "not implemented" markers, bits of a register, enumerations) wrap them only where configured.
A decoder returns a `PointFault` instead of a number when the value means "no value" (SunSpec markers, an
enumeration value without a label).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from drivers.modbus.config import WIDTH, ByteOrder, DataType, ModbusPoint, WordOrder
from edge.sdk import PointFault, Scalar

# A decoder reads one value at `offset` of a block of registers (ints) or bits (bools).
Decoder = Callable[[Sequence[Any], int], Scalar | PointFault]

_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_HH = struct.Struct(">HH")
_unpack_f32 = _F32.unpack
_pack_hh = _HH.pack

_SIGNED = frozenset({"int16", "sunssf", "int32", "int64"})
# SunSpec "not implemented" markers, as the unsigned value of the registers (floats: NaN).
SUNSPEC_MARKERS: dict[str, int] = {
    "int16": 0x8000,
    "sunssf": 0x8000,
    "uint16": 0xFFFF,
    "acc16": 0,
    "int32": 0x8000_0000,
    "uint32": 0xFFFF_FFFF,
    "acc32": 0,
    "int64": 0x8000_0000_0000_0000,
    "uint64": 0xFFFF_FFFF_FFFF_FFFF,
    "acc64": 0,
}


def _bit(block: Sequence[Any], offset: int) -> bool:
    return bool(block[offset])


def _uint16(block: Sequence[Any], offset: int) -> int:
    value: int = block[offset]
    return value


def _int16(block: Sequence[Any], offset: int) -> int:
    value: int = block[offset]
    return value - 0x1_0000 if value & 0x8000 else value


def _uint32_big(block: Sequence[Any], offset: int) -> int:
    value: int = (block[offset] << 16) | block[offset + 1]
    return value


def _uint32_little(block: Sequence[Any], offset: int) -> int:
    value: int = (block[offset + 1] << 16) | block[offset]
    return value


def _int32_big(block: Sequence[Any], offset: int) -> int:
    value: int = (block[offset] << 16) | block[offset + 1]
    return value - 0x1_0000_0000 if value & 0x8000_0000 else value


def _int32_little(block: Sequence[Any], offset: int) -> int:
    value: int = (block[offset + 1] << 16) | block[offset]
    return value - 0x1_0000_0000 if value & 0x8000_0000 else value


def _float32_big(block: Sequence[Any], offset: int) -> float:
    value: float = _unpack_f32(_pack_hh(block[offset], block[offset + 1]))[0]
    return value


def _float32_little(block: Sequence[Any], offset: int) -> float:
    value: float = _unpack_f32(_pack_hh(block[offset + 1], block[offset]))[0]
    return value


_FAST: dict[tuple[str, str], Decoder] = {
    ("bool", "big"): _bit,
    ("bool", "little"): _bit,
    ("uint16", "big"): _uint16,
    ("uint16", "little"): _uint16,
    ("acc16", "big"): _uint16,
    ("acc16", "little"): _uint16,
    ("int16", "big"): _int16,
    ("int16", "little"): _int16,
    ("sunssf", "big"): _int16,
    ("sunssf", "little"): _int16,
    ("uint32", "big"): _uint32_big,
    ("uint32", "little"): _uint32_little,
    ("acc32", "big"): _uint32_big,
    ("acc32", "little"): _uint32_little,
    ("int32", "big"): _int32_big,
    ("int32", "little"): _int32_little,
    ("float32", "big"): _float32_big,
    ("float32", "little"): _float32_little,
}


def swap(register: int) -> int:
    """The register with its two bytes exchanged."""
    return ((register & 0xFF) << 8) | (register >> 8)


def _unsigned(
    width: int, word_order: WordOrder, byte_order: ByteOrder
) -> Callable[[Sequence[Any], int], int]:
    """Reads `width` registers as one unsigned integer, most significant first after applying both orders."""
    swapped = byte_order == "little"
    little_words = word_order == "little"

    def read(block: Sequence[Any], offset: int) -> int:
        words = block[offset : offset + width]
        if little_words:
            words = words[::-1]
        value = 0
        for word in words:
            value = (value << 16) | (swap(word) if swapped else word)
        return value

    return read


def decoder_for(type_: DataType, word_order: WordOrder, byte_order: ByteOrder = "big") -> Decoder:
    """The plain decoder of one numeric type and orders; call it as `decoder(block, offset)`."""
    if byte_order == "big" and (type_, word_order) in _FAST:
        return _FAST[(type_, word_order)]
    if type_ in ("bool", "string"):
        raise ValueError(f"decoder_for handles numbers; use point_decoder for a {type_}")
    width = WIDTH[type_]
    read = _unsigned(width, word_order, byte_order)
    if type_ in ("float32", "float64"):
        unpack = (_F32 if type_ == "float32" else _F64).unpack
        size = width * 2

        def as_float(block: Sequence[Any], offset: int) -> float:
            value: float = unpack(read(block, offset).to_bytes(size, "big"))[0]
            return value

        return as_float
    if type_ in _SIGNED:
        sign, full = 1 << (width * 16 - 1), 1 << (width * 16)

        def as_signed(block: Sequence[Any], offset: int) -> int:
            value = read(block, offset)
            return value - full if value & sign else value

        return as_signed
    return read


def point_decoder(
    point: ModbusPoint, word_order: WordOrder = "big", byte_order: ByteOrder = "big"
) -> Decoder:
    """The decoder of one point, with the point's own orders winning over the device's (given here)."""
    word_order = point.word_order or word_order
    byte_order = point.byte_order or byte_order
    if point.type == "string":
        return _string_decoder(point.width, byte_order)
    if point.type == "bool":
        return _bit
    base = decoder_for(point.type, word_order, byte_order)
    decoder = base
    if point.bit is not None:
        decoder = _bit_field(decoder, point.bit, point.bits)
    if point.labels is not None:
        decoder = _enumeration(decoder, point.labels)
    if point.sunspec:
        decoder = _sunspec(point.type, base, decoder, word_order, byte_order)
    return decoder


def _string_decoder(width: int, byte_order: ByteOrder) -> Decoder:
    swapped = byte_order == "little"

    def as_string(block: Sequence[Any], offset: int) -> str:
        words = block[offset : offset + width]
        raw = b"".join((swap(w) if swapped else w).to_bytes(2, "big") for w in words)
        return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").rstrip()

    return as_string


def _bit_field(inner: Decoder, bit: int, bits: int) -> Decoder:
    mask = (1 << bits) - 1
    if bits == 1:

        def one_bit(block: Sequence[Any], offset: int) -> Scalar | PointFault:
            value = inner(block, offset)
            return value if isinstance(value, PointFault) else bool((int(value) >> bit) & 1)

        return one_bit

    def field(block: Sequence[Any], offset: int) -> Scalar | PointFault:
        value = inner(block, offset)
        return value if isinstance(value, PointFault) else (int(value) & 0xFFFF) >> bit & mask

    return field


def _enumeration(inner: Decoder, labels: Mapping[int, str]) -> Decoder:
    table = dict(labels)
    faults: dict[Scalar, PointFault] = {}  # a PointFault per unknown value, built once

    def label(block: Sequence[Any], offset: int) -> Scalar | PointFault:
        value = inner(block, offset)
        if isinstance(value, PointFault):
            return value
        found: str | None = table.get(int(value))
        if found is not None:
            return found
        fault = faults.get(value)
        if fault is None:
            fault = faults.setdefault(value, PointFault(f"unknown enumeration value {value}"))
        return fault

    return label


def _sunspec(
    type_: DataType, base: Decoder, inner: Decoder, word_order: WordOrder, byte_order: ByteOrder
) -> Decoder:
    if type_ in ("float32", "float64"):
        nan_fault = PointFault("not implemented (NaN)")

        def float_marker(block: Sequence[Any], offset: int) -> Scalar | PointFault:
            value = base(block, offset)
            return nan_fault if isinstance(value, float) and math.isnan(value) else inner(block, offset)

        return float_marker
    marker = SUNSPEC_MARKERS[type_]
    fault = PointFault(f"not implemented ({marker:#x})" if marker else "not implemented (0)")
    raw = _unsigned(WIDTH[type_], word_order, byte_order)

    def int_marker(block: Sequence[Any], offset: int) -> Scalar | PointFault:
        return fault if raw(block, offset) == marker else inner(block, offset)

    return int_marker


def decode(
    point: ModbusPoint,
    block: Sequence[Any],
    offset: int = 0,
    default_word_order: WordOrder = "big",
    default_byte_order: ByteOrder = "big",
) -> Scalar | PointFault:
    """Decode one point from a block of registers (or bits). Convenient, not the polling hot path."""
    return point_decoder(point, default_word_order, default_byte_order)(block, offset)
