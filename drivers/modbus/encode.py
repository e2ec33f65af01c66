"""Register encoding for writes: pure functions, no I/O; the inverse of `decode.point_decoder`."""

from __future__ import annotations

import math
import struct
import sys

from drivers.modbus.config import BIT_TABLES, ByteOrder, ModbusPoint, WordOrder
from drivers.modbus.decode import swap
from edge.sdk import Scalar

_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_INT_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-0x8000, 0x7FFF),
    "sunssf": (-0x8000, 0x7FFF),
    "uint16": (0, 0xFFFF),
    "acc16": (0, 0xFFFF),
    "int32": (-0x8000_0000, 0x7FFF_FFFF),
    "uint32": (0, 0xFFFF_FFFF),
    "acc32": (0, 0xFFFF_FFFF),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
    "acc64": (0, 2**64 - 1),
}
_FLOAT_MAX: dict[str, float] = {"float32": 3.4028234663852886e38, "float64": sys.float_info.max}


def raw_range(point: ModbusPoint) -> tuple[float, float] | None:
    """The raw numbers the point's type holds (what `encode` accepts); None for coils, bits and strings."""
    if point.table in BIT_TABLES or point.type == "string":
        return None
    if point.bit is not None:
        return None if point.bits == 1 else (0, 2**point.bits - 1)
    if point.type in _FLOAT_MAX:
        return (-_FLOAT_MAX[point.type], _FLOAT_MAX[point.type])
    return _INT_RANGES[point.type]


def encode(
    point: ModbusPoint,
    raw_value: Scalar,
    default_word_order: WordOrder = "big",
    default_byte_order: ByteOrder = "big",
) -> list[int] | bool:
    """Turn a raw value into what a write sends: a bool for a coil, else a list of registers.

    Integer types accept ints, and floats within 1e-9 of an integer (a de-scaled 21.5 / 0.1 is 214.99999999999997);
    an enumeration also accepts one of its labels. Raises `ValueError` saying why when the value has the wrong
    kind or does not fit the type.
    """
    if point.table in BIT_TABLES:
        return _encode_bool(point, raw_value)
    word_order = point.word_order or default_word_order
    byte_order = point.byte_order or default_byte_order
    if point.type == "string":
        words = _encode_string(point, raw_value)
    else:
        if isinstance(raw_value, str) and point.labels:
            raw_value = _label_value(point, raw_value)
        if isinstance(raw_value, bool | str):
            raise ValueError(f"a {point.type} needs a number, got {raw_value!r}")
        words = _encode_number(point, raw_value)
        if word_order == "little":
            words.reverse()
    return [swap(w) for w in words] if byte_order == "little" else words


def _encode_number(point: ModbusPoint, raw_value: int | float) -> list[int]:
    """The registers, most significant first."""
    width = point.width
    if point.type in ("float32", "float64"):
        codec = _F32 if point.type == "float32" else _F64
        try:
            packed = codec.pack(float(raw_value))
        except OverflowError:
            raise ValueError(f"{raw_value!r} is out of the {point.type} range") from None
        unsigned = int.from_bytes(packed, "big")
    else:
        low, high = _INT_RANGES[point.type]
        value = _as_int(point, raw_value)
        if not low <= value <= high:
            raise ValueError(f"{raw_value!r} is out of the {point.type} range {low}..{high}")
        unsigned = value & ((1 << (16 * width)) - 1)
    return [(unsigned >> (16 * (width - 1 - i))) & 0xFFFF for i in range(width)]


def _encode_string(point: ModbusPoint, raw_value: Scalar) -> list[int]:
    if not isinstance(raw_value, str):
        raise ValueError(f"a string point needs text, got {raw_value!r}")
    data = raw_value.encode("utf-8")
    if len(data) > 2 * point.width:
        raise ValueError(f"{raw_value!r} needs {len(data)} bytes; the string holds {2 * point.width}")
    data = data.ljust(2 * point.width, b"\0")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def _label_value(point: ModbusPoint, label: str) -> int:
    for value, name in (point.labels or {}).items():
        if name == label:
            return value
    raise ValueError(f"{label!r} is not one of {sorted((point.labels or {}).values())}")


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
