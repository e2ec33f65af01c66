"""Decoding of the wider Modbus types, byte and word orders, bits, enumerations, strings, SunSpec markers."""

from __future__ import annotations

import math
from typing import Any

import pytest

from drivers.modbus import ModbusPoint, decode, encode, plan_reads
from drivers.modbus.decode import SUNSPEC_MARKERS, point_decoder
from edge.devices.normalize import DeviceNormalizer
from edge.sdk.points import PointFault


def pt(type_: Any = "uint16", **kw: Any) -> ModbusPoint:
    return ModbusPoint(name="p", address=0, type=type_, **kw)


# (type, word order, byte order, registers as sent, value)
VECTORS: list[tuple[str, str, str, list[int], Any]] = [
    ("uint64", "big", "big", [0x0123, 0x4567, 0x89AB, 0xCDEF], 0x0123_4567_89AB_CDEF),
    ("uint64", "little", "big", [0xCDEF, 0x89AB, 0x4567, 0x0123], 0x0123_4567_89AB_CDEF),
    ("uint64", "big", "little", [0x2301, 0x6745, 0xAB89, 0xEFCD], 0x0123_4567_89AB_CDEF),
    ("uint64", "little", "little", [0xEFCD, 0xAB89, 0x6745, 0x2301], 0x0123_4567_89AB_CDEF),
    ("int64", "big", "big", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], -2),
    ("int64", "big", "big", [0x8000, 0, 0, 0], -(2**63)),
    ("int64", "little", "big", [0xFFFF, 0xFFFF, 0xFFFF, 0x7FFF], 2**63 - 1),
    ("acc64", "big", "big", [0, 0, 1, 0], 65536),
    ("float64", "big", "big", [0x3FF8, 0, 0, 0], 1.5),
    ("float64", "little", "big", [0, 0, 0, 0xC029], -12.5),
    ("float64", "big", "little", [0xF83F, 0, 0, 0], 1.5),
    ("float64", "big", "big", [0x4009, 0x21FB, 0x5444, 0x2D18], math.pi),
    ("uint16", "big", "little", [0x3412], 0x1234),
    ("int16", "big", "little", [0xFFFE], -257),
    ("int32", "big", "little", [0xFFFF, 0xFFFE], -257),
    ("uint32", "little", "little", [0x7856, 0x3412], 0x12345678),
    ("float32", "big", "little", [0xC03F, 0x0000], 1.5),
    ("float32", "little", "little", [0x0000, 0xC03F], 1.5),
    ("acc32", "big", "big", [0x0001, 0x0002], 0x10002),
    ("sunssf", "big", "big", [0xFFFE], -2),
]


@pytest.mark.parametrize(("type_", "words", "bytes_", "registers", "value"), VECTORS)
def test_known_vectors(type_: str, words: str, bytes_: str, registers: list[int], value: Any) -> None:
    point = pt(type_, word_order=words, byte_order=bytes_)
    result = decode(point, [0xAAAA, *registers], 1)
    assert result == value and type(result) is type(value)
    # the device's orders apply to a point without its own
    assert decode(pt(type_), registers, 0, words, bytes_) == value  # type: ignore[arg-type]
    assert encode(point, value) == registers
    assert encode(pt(type_), value, words, bytes_) == registers  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("type_", "value"), [("uint64", -1), ("uint64", 2**64), ("int64", 2**63), ("int64", -(2**63) - 1)]
)
def test_encode_refuses_what_does_not_fit(type_: str, value: Any) -> None:
    with pytest.raises(ValueError, match=r"range|cannot hold"):
        encode(pt(type_), value)


def test_strings() -> None:
    regs = [0x4564, 0x6765, 0x5369, 0x6D00, 0, 0]  # "EdgeSim" NUL-padded
    assert decode(pt("string", length=6), regs) == "EdgeSim"
    assert (
        decode(pt("string", length=6, byte_order="little"), [0x6445, 0x6567, 0x6953, 0x006D, 0, 0])
        == "EdgeSim"
    )
    assert decode(pt("string", length=2), [0x4142, 0x2020]) == "AB"  # space padding is trimmed too
    assert decode(pt("string", length=2), [0, 0]) == ""
    assert encode(pt("string", length=6), "EdgeSim") == regs
    assert encode(pt("string", length=6, byte_order="little"), "EdgeSim")[0] == 0x6445
    with pytest.raises(ValueError, match="holds 4"):
        encode(pt("string", length=2), "too long")
    assert pt("string", length=6).width == 6


def test_bits_and_bit_fields() -> None:
    register = [0b1010_0000_0000_0101]
    assert decode(pt(bit=0), register) is True
    assert decode(pt(bit=1), register) is False
    assert decode(pt(bit=15), register) is True
    assert decode(pt(bit=0, bits=3), register) == 0b101
    assert decode(pt(bit=13, bits=3), register) == 0b101
    assert decode(pt("int16", bit=12, bits=4), register) == 0b1010  # the raw bits, not the sign
    assert decode(pt(bit=8, byte_order="little"), [0x0001]) is True  # byte swap first


def test_enumerations() -> None:
    point = pt(labels={1: "off", 4: "mppt", 7: "fault"})
    assert decode(point, [4]) == "mppt"
    assert decode(point, [9]) == PointFault("unknown enumeration value 9")
    assert encode(point, "fault") == [7] and encode(point, 1) == [1]
    with pytest.raises(ValueError, match="not one of"):
        encode(point, "sleeping")
    labels = ModbusPoint.model_validate({"name": "p", "address": 0, "labels": {"1": "on"}}).labels
    assert labels == {1: "on"}  # TOML keys are strings
    bits = pt(bit=0, bits=2, labels={0: "idle", 3: "both"})
    assert decode(bits, [0xFF03]) == "both"


MARKERS: list[tuple[str, list[int], str]] = [
    ("int16", [0x8000], "not implemented (0x8000)"),
    ("sunssf", [0x8000], "not implemented (0x8000)"),
    ("uint16", [0xFFFF], "not implemented (0xffff)"),
    ("acc16", [0], "not implemented (0)"),
    ("int32", [0x8000, 0], "not implemented (0x80000000)"),
    ("uint32", [0xFFFF, 0xFFFF], "not implemented (0xffffffff)"),
    ("acc32", [0, 0], "not implemented (0)"),
    ("int64", [0x8000, 0, 0, 0], "not implemented (0x8000000000000000)"),
    ("uint64", [0xFFFF] * 4, "not implemented (0xffffffffffffffff)"),
    ("acc64", [0] * 4, "not implemented (0)"),
    ("float32", [0x7FC0, 0], "not implemented (NaN)"),
    ("float64", [0x7FF8, 0, 0, 0], "not implemented (NaN)"),
]


@pytest.mark.parametrize(("type_", "registers", "reason"), MARKERS)
def test_sunspec_markers_are_faults_only_when_asked(type_: str, registers: list[int], reason: str) -> None:
    assert decode(pt(type_, sunspec=True), registers) == PointFault(reason)
    plain = decode(pt(type_), registers)
    assert not isinstance(plain, PointFault)  # without `sunspec`, the raw number
    assert type_ in SUNSPEC_MARKERS or type_.startswith("float")


def test_sunspec_marker_checks_the_raw_words_in_the_point_order() -> None:
    assert decode(pt("int32", sunspec=True, word_order="little"), [0, 0x8000]) == PointFault(
        "not implemented (0x80000000)"
    )
    assert decode(pt("int32", sunspec=True, word_order="little"), [0x8000, 0]) == 0x8000
    assert decode(pt("int16", sunspec=True), [0x8001]) == -32767
    assert decode(pt("uint16", sunspec=True, bit=3), [0xFFFF]) == PointFault("not implemented (0xffff)")
    assert decode(pt("uint16", sunspec=True, labels={1: "on"}), [0xFFFF]) == PointFault(
        "not implemented (0xffff)"
    )
    assert decode(pt("string", length=1, sunspec=True), [0x4100]) == "A"  # strings carry no marker


def test_planner_uses_widths_and_device_byte_order() -> None:
    points = [
        pt("float64"),
        ModbusPoint(name="s", address=4, type="string", length=8),
        pt("uint16").model_copy(),
    ]
    plan = plan_reads(points, default_byte_order="little")
    assert [(r.start, r.count) for r in plan.requests] == [(0, 12)]
    out: list[Any] = [None] * 3
    block = [0xF83F, 0, 0, 0, *([0x4142] * 8)]
    plan.requests[0].decode_into(block, out)
    assert out == [1.5, "BA" * 8, 0x3FF8]


def test_point_decoder_is_the_fast_function_for_plain_points() -> None:
    from drivers.modbus.decode import _int16  # the hot path stays one call

    assert point_decoder(pt("int16")) is _int16


def test_a_not_implemented_scale_factor_makes_its_values_bad_not_wrong() -> None:
    points = [
        ModbusPoint(name="w", address=0, type="int16", sunspec=True, scale_factor="w_sf", unit="W"),
        ModbusPoint(name="w_sf", address=1, type="sunssf", sunspec=True, publish=False),
    ]
    plan = plan_reads(points)
    out: list[Any] = [None, None]
    plan.requests[0].decode_into([1234, 0x8000], out)
    sample = DeviceNormalizer("d", points).normalize(out)["w"]
    assert sample["quality"] == "bad" and sample["value"] is None
    plan.requests[0].decode_into([0x8000, 0xFFFF], out)
    sample = DeviceNormalizer("d", points).normalize(out)["w"]
    assert sample == {"value": None, "unit": "W", "quality": "bad", "reason": "not implemented (0x8000)"}
