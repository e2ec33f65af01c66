"""Register decoding and encoding: pure functions, no I/O.

Modbus sends each register big-endian; only the order of the two registers of a 32-bit value varies
("big": high word first, "little": low word first). Decoders are picked once per point when the read plan
is compiled (`decoder_for`), so polling costs one plain function call per point: no branching on the type,
no struct format parsing.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

from drivers.modbus.config import BIT_TABLES, DataType, ModbusPoint, WordOrder
from edge.points import Scalar

# A decoder reads one value at `offset` of a block of registers (ints) or bits (bools).
Decoder = Callable[[Sequence[Any], int], Scalar]

_F32 = struct.Struct(">f")
_HH = struct.Struct(">HH")
_unpack_f32 = _F32.unpack
_pack_hh = _HH.pack

_INT_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-0x8000, 0x7FFF),
    "uint16": (0, 0xFFFF),
    "int32": (-0x8000_0000, 0x7FFF_FFFF),
    "uint32": (0, 0xFFFF_FFFF),
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


_DECODERS: dict[tuple[str, str], Decoder] = {
    ("bool", "big"): _bit,
    ("bool", "little"): _bit,
    ("uint16", "big"): _uint16,
    ("uint16", "little"): _uint16,
    ("int16", "big"): _int16,
    ("int16", "little"): _int16,
    ("uint32", "big"): _uint32_big,
    ("uint32", "little"): _uint32_little,
    ("int32", "big"): _int32_big,
    ("int32", "little"): _int32_little,
    ("float32", "big"): _float32_big,
    ("float32", "little"): _float32_little,
}


def decoder_for(type_: DataType, word_order: WordOrder) -> Decoder:
    """The decoder of one type and word order; call it as `decoder(block, offset)`."""
    return _DECODERS[(type_, word_order)]


def decode(
    point: ModbusPoint, block: Sequence[Any], offset: int = 0, default_word_order: WordOrder = "big"
) -> Scalar:
    """Decode one point from a block of registers (or bits). Convenient, not the polling hot path."""
    return decoder_for(point.type, point.word_order or default_word_order)(block, offset)


def encode(point: ModbusPoint, raw_value: Scalar, default_word_order: WordOrder = "big") -> list[int] | bool:
    """Turn a raw value into what a write sends: a bool for a coil, else a list of registers.

    Integer types accept ints, and floats within 1e-9 of an integer (a de-scaled 21.5 / 0.1 is 214.99999999999997).
    Raises `ValueError` saying why when the value has the wrong kind or does not fit the type.
    """
    if point.table in BIT_TABLES:
        return _encode_bool(point, raw_value)
    if isinstance(raw_value, bool | str):
        raise ValueError(f"a {point.type} needs a number, got {raw_value!r}")
    word_order = point.word_order or default_word_order
    if point.type == "float32":
        return _encode_float32(point, float(raw_value), word_order)
    low, high = _INT_RANGES[point.type]
    value = _as_int(point, raw_value)
    if not low <= value <= high:
        raise ValueError(f"{raw_value!r} is out of the {point.type} range {low}..{high}")
    if point.width == 1:
        return [value & 0xFFFF]
    unsigned = value & 0xFFFF_FFFF
    high_word, low_word = unsigned >> 16, unsigned & 0xFFFF
    return [high_word, low_word] if word_order == "big" else [low_word, high_word]


def _encode_bool(point: ModbusPoint, raw_value: Scalar) -> bool:
    if isinstance(raw_value, bool):
        return raw_value
    if isinstance(raw_value, int | float) and raw_value in (0, 1):
        return bool(raw_value)
    raise ValueError(f"a {point.table} needs true/false or 0/1, got {raw_value!r}")


def _as_int(point: ModbusPoint, raw_value: int | float) -> int:
    if isinstance(raw_value, int):
        return raw_value
    if not math.isfinite(raw_value):
        raise ValueError(f"a {point.type} cannot hold {raw_value!r}")
    nearest = round(raw_value)
    if abs(raw_value - nearest) > 1e-9 * max(1.0, abs(raw_value)):
        raise ValueError(f"a {point.type} needs a whole number, got {raw_value!r}")
    return nearest


def _encode_float32(point: ModbusPoint, value: float, word_order: WordOrder) -> list[int]:
    try:
        packed = _F32.pack(value)
    except OverflowError:
        raise ValueError(f"{value!r} is out of the float32 range") from None
    high_word, low_word = _HH.unpack(packed)
    return [high_word, low_word] if word_order == "big" else [low_word, high_word]
