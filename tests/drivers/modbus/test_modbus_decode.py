"""Register decoding and encoding of the Modbus driver, against known vectors."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest

from drivers.modbus import ModbusPoint, decode, decoder_for, encode


def pt(type_: Any = "uint16", table: Any = "holding", word_order: Any = None) -> ModbusPoint:
    return ModbusPoint(name="p", address=0, type=type_, table=table, word_order=word_order)


# (type, word order, registers, value): byte order inside a register is always big-endian
VECTORS: list[tuple[str, str, list[int], Any]] = [
    ("uint16", "big", [0x0000], 0),
    ("uint16", "big", [0xFFFF], 65535),
    ("uint16", "little", [0x1234], 0x1234),
    ("int16", "big", [0xFFFF], -1),
    ("int16", "big", [0x8000], -32768),
    ("int16", "big", [0x7FFF], 32767),
    ("int16", "little", [0xFF85], -123),
    ("uint32", "big", [0x1234, 0x5678], 0x12345678),
    ("uint32", "little", [0x5678, 0x1234], 0x12345678),
    ("uint32", "big", [0xFFFF, 0xFFFF], 0xFFFFFFFF),
    ("int32", "big", [0xFFFF, 0xFFFF], -1),
    ("int32", "big", [0x8000, 0x0000], -(2**31)),
    ("int32", "big", [0x7FFF, 0xFFFF], 2**31 - 1),
    ("int32", "little", [0xFFFE, 0xFFFF], -2),
    ("int32", "big", [0xFFFE, 0x1DC0], -123456),
    ("float32", "big", [0x3FC0, 0x0000], 1.5),
    ("float32", "little", [0x0000, 0x3FC0], 1.5),
    ("float32", "big", [0xC148, 0x0000], -12.5),
    ("float32", "big", [0x0000, 0x0000], 0.0),
    ("float32", "big", [0x7F80, 0x0000], math.inf),
]


@pytest.mark.parametrize(("type_", "order", "registers", "value"), VECTORS)
def test_decode_known_vectors(type_: str, order: str, registers: list[int], value: Any) -> None:
    assert decode(pt(type_, word_order=order), registers) == value
    # the same through the device's default word order, and at an offset inside a block
    assert decode(pt(type_), [0xAAAA, *registers], 1, default_word_order=order) == value  # type: ignore[arg-type]
    result = decoder_for(type_, order)([*registers], 0)  # type: ignore[arg-type]
    assert type(result) is type(value)


@pytest.mark.parametrize(
    ("type_", "order", "registers", "value"), [v for v in VECTORS if math.isfinite(v[3])]
)
def test_encode_is_the_inverse_of_decode(type_: str, order: str, registers: list[int], value: Any) -> None:
    assert encode(pt(type_, word_order=order), value) == registers
    assert encode(pt(type_), value, default_word_order=order) == registers  # type: ignore[arg-type]


def test_declared_value_kinds_are_the_kinds_decoding_gives() -> None:
    """Home Assistant and Sparkplug describe a point by its declared kind before it is read."""
    from edge.bus.ha_entities import kind_of

    cases: list[tuple[ModbusPoint, list[Any]]] = [
        (pt("uint16"), [7]),
        (pt("int32"), [0xFFFF, 0xFFFE]),
        (pt("float32"), encode(pt("float32"), 21.5)),  # type: ignore[list-item]
        (pt("bool", "coil"), [True]),
        (ModbusPoint(name="p", address=0, bit=3), [0b1000]),
        (ModbusPoint(name="p", address=0, labels={1: "on", 2: "off"}), [2]),
        (ModbusPoint(name="p", address=0, type="string", length=2), [0x4142, 0x4344]),
    ]
    for point, block in cases:
        assert point.value_kind == kind_of(point, decode(point, block)), point  # type: ignore[arg-type]
    assert ModbusPoint(name="p", address=0, scale=0.1).value_kind == "number"  # scaled: not whole


def test_float32_nan_decodes_to_nan() -> None:
    assert math.isnan(decode(pt("float32"), [0x7FC0, 0x0000]))  # type: ignore[arg-type]


def test_float32_rounds_to_single_precision() -> None:
    (expected,) = struct.unpack(">f", struct.pack(">f", 21.3))
    assert decode(pt("float32"), encode(pt("float32"), 21.3)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("table", ["coil", "discrete"])
def test_bits(table: str) -> None:
    point = pt("bool", table)
    assert decode(point, [False, True, False], 1) is True
    assert decode(point, [0, 1], 0) is False
    assert encode(point, True) is True
    assert encode(point, 0) is False
    assert encode(point, 1.0) is True


def test_integral_floats_are_accepted_for_integer_registers() -> None:
    # a de-scaled setpoint: 21.5 / 0.1 == 214.99999999999997
    assert encode(pt("uint16"), 21.5 / 0.1) == [215]
    assert encode(pt("int32"), -2.0) == [0xFFFF, 0xFFFE]
    assert encode(pt("float32"), 2) == [0x4000, 0x0000]


@pytest.mark.parametrize(
    ("type_", "value", "message"),
    [
        ("uint16", 65536, r"65536 is out of the uint16 range 0\.\.65535"),
        ("uint16", -1, "out of the uint16 range"),
        ("int16", 32768, r"out of the int16 range -32768\.\.32767"),
        ("int16", -32769, "out of the int16 range"),
        ("uint32", 2**32, "out of the uint32 range"),
        ("int32", -(2**31) - 1, "out of the int32 range"),
        ("float32", 1e39, "out of the float32 range"),
        ("uint16", 1.5, "needs a whole number"),
        ("int16", math.nan, "cannot hold nan"),
        ("uint16", True, "needs a number"),
        ("float32", "3.0", "needs a number"),
    ],
)
def test_encode_refuses_values_that_do_not_fit(type_: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode(pt(type_), value)


@pytest.mark.parametrize("value", [2, -1, 0.5, "on"])
def test_encode_bool_refuses_non_bits(value: Any) -> None:
    with pytest.raises(ValueError, match="true/false or 0/1"):
        encode(pt("bool", "coil"), value)


def test_float32_infinity_and_max_are_encodable() -> None:
    assert encode(pt("float32"), math.inf) == [0x7F80, 0x0000]
    assert encode(pt("float32"), 3.4028234663852886e38) == [0x7F7F, 0xFFFF]
