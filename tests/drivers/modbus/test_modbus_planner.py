"""The Modbus read planner (pure), the driver's config models and the shipped profile: no I/O."""

from __future__ import annotations

import itertools
import random
import tomllib
from typing import Any

import pytest
from pydantic import ValidationError

from drivers.modbus import ModbusConnection, ModbusDriver, ModbusPlan, ModbusPoint, decode, plan_reads
from drivers.modbus.config import BIT_TABLES

_counter = iter(range(1_000_000))


def pt(
    address: int, type_: Any = "uint16", table: Any = "holding", name: str | None = None, **kw: Any
) -> ModbusPoint:
    return ModbusPoint(name=name or f"p{next(_counter)}", address=address, type=type_, table=table, **kw)


def spans(plan: ModbusPlan) -> list[tuple[str, int, int]]:
    return [(r.table, r.start, r.count) for r in plan.requests]


# --- coalescing ------------------------------------------------------------------------------------------


def test_adjacent_registers_make_one_request() -> None:
    plan = plan_reads([pt(10), pt(11), pt(12, "int32")])
    assert spans(plan) == [("holding", 10, 4)]
    assert [(s.point_index, s.offset) for s in plan.requests[0].slots] == [(0, 0), (1, 1), (2, 2)]


def test_without_coalescing_every_point_is_its_own_request() -> None:
    plan = plan_reads([pt(12, "int32"), pt(10), pt(11), pt(3, "bool", "coil")], coalesce=False)
    assert spans(plan) == [("holding", 10, 1), ("holding", 11, 1), ("holding", 12, 2), ("coil", 3, 1)]
    assert [r.slots[0].point_index for r in plan.requests] == [1, 2, 0, 3]


@pytest.mark.parametrize("max_gap", [0, 1, 8, 123])
def test_gap_equal_to_max_gap_is_bridged(max_gap: int) -> None:
    # the second point starts max_gap registers after the first one ends
    plan = plan_reads([pt(0), pt(1 + max_gap)], max_gap=max_gap)
    assert spans(plan) == [("holding", 0, max_gap + 2)]


@pytest.mark.parametrize("max_gap", [0, 1, 8, 123])
def test_gap_one_over_max_gap_splits(max_gap: int) -> None:
    plan = plan_reads([pt(0), pt(2 + max_gap)], max_gap=max_gap)
    assert spans(plan) == [("holding", 0, 1), ("holding", 2 + max_gap, 1)]


def test_gap_is_measured_from_the_end_of_a_32_bit_value() -> None:
    assert spans(plan_reads([pt(0, "float32"), pt(10)], max_gap=8)) == [("holding", 0, 11)]
    assert spans(plan_reads([pt(0, "float32"), pt(11)], max_gap=8)) == [("holding", 0, 2), ("holding", 11, 1)]


def test_125_registers_fit_one_request_126_do_not() -> None:
    assert spans(plan_reads([pt(a) for a in range(125)])) == [("holding", 0, 125)]
    assert spans(plan_reads([pt(a) for a in range(126)])) == [("holding", 0, 125), ("holding", 125, 1)]


def test_bridging_a_gap_never_exceeds_the_limit() -> None:
    plan = plan_reads([pt(0), pt(120)], max_gap=124)
    assert spans(plan) == [("holding", 0, 121)]
    plan = plan_reads([pt(0), pt(125)], max_gap=124)
    assert spans(plan) == [("holding", 0, 1), ("holding", 125, 1)]


def test_smaller_max_registers() -> None:
    plan = plan_reads([pt(a) for a in range(10)], max_registers=4)
    assert spans(plan) == [("holding", 0, 4), ("holding", 4, 4), ("holding", 8, 2)]


def test_32_bit_value_straddling_the_limit_moves_whole_to_the_next_request() -> None:
    points = [pt(a) for a in range(124)] + [pt(124, "uint32")]
    plan = plan_reads(points)
    assert spans(plan) == [("holding", 0, 124), ("holding", 124, 2)]
    assert plan.requests[1].slots[0].point_index == 124
    assert plan.requests[1].slots[0].offset == 0


def test_overlapping_points_across_a_full_block_give_overlapping_requests() -> None:
    # the uint32 at 3 overlaps the uint32 at 2, but a 4-register block [0, 4) has no room for it
    plan = plan_reads([pt(0), pt(1), pt(2, "uint32"), pt(3, "uint32")], max_registers=4)
    assert spans(plan) == [("holding", 0, 4), ("holding", 3, 2)]


def test_duplicate_and_overlapping_points_share_registers() -> None:
    points = [pt(5, name="a"), pt(5, "int16", name="b"), pt(4, "uint32", name="c"), pt(5, name="d")]
    plan = plan_reads(points)
    assert spans(plan) == [("holding", 4, 2)]
    offsets = {plan.points[s.point_index].name: s.offset for s in plan.requests[0].slots}
    assert offsets == {"a": 1, "b": 1, "c": 0, "d": 1}
    out: list[Any] = [None] * 4
    plan.requests[0].decode_into([0x0001, 0xFFFF], out)
    assert out == [0xFFFF, -1, 0x0001_FFFF, 0xFFFF]


def test_a_point_inside_a_wider_one_does_not_extend_the_block() -> None:
    plan = plan_reads([pt(0, "float32"), pt(1)], max_gap=0)
    assert spans(plan) == [("holding", 0, 2)]


def test_tables_are_planned_separately() -> None:
    points = [
        pt(0, table="input"),
        pt(0),
        pt(1, table="input"),
        pt(0, "bool", "coil"),
        pt(0, "bool", "discrete"),
        pt(1),
    ]
    plan = plan_reads(points)
    assert spans(plan) == [("holding", 0, 2), ("input", 0, 2), ("coil", 0, 1), ("discrete", 0, 1)]
    for request in plan.requests:
        assert all(plan.points[s.point_index].table == request.table for s in request.slots)


def test_bits_use_max_bits_and_max_gap_in_bits() -> None:
    coils = [pt(a, "bool", "coil") for a in range(3000)]
    assert spans(plan_reads(coils)) == [("coil", 0, 2000), ("coil", 2000, 1000)]
    assert spans(plan_reads(coils, max_bits=1000)) == [
        ("coil", 0, 1000),
        ("coil", 1000, 1000),
        ("coil", 2000, 1000),
    ]
    sparse = [pt(0, "bool", "discrete"), pt(9, "bool", "discrete"), pt(19, "bool", "discrete")]
    assert spans(plan_reads(sparse, max_gap=8)) == [("discrete", 0, 10), ("discrete", 19, 1)]
    assert plan_reads(sparse).requests[0].is_bit


def test_points_keep_the_configured_order() -> None:
    points = [pt(30, name="z"), pt(1, name="a"), pt(20, "int32", name="m"), pt(0, "bool", "coil", name="c")]
    plan = plan_reads(points, max_gap=124)
    assert [p.name for p in plan.points] == ["z", "a", "m", "c"]
    out: list[Any] = [None] * 4
    registers = list(range(100, 131))  # address a holds 100 + a
    for request in plan.requests:
        block = [True] if request.is_bit else registers[request.start : request.end]
        request.decode_into(block, out)
    assert out == [130, 101, (120 << 16) | 121, True]


def test_word_order_comes_from_the_point_or_the_device() -> None:
    points = [pt(0, "uint32", name="dev"), pt(2, "uint32", name="big", word_order="big")]
    plan = plan_reads(points, default_word_order="little")
    out: list[Any] = [None, None]
    plan.requests[0].decode_into([0x5678, 0x1234, 0x1234, 0x5678], out)
    assert out == [0x12345678, 0x12345678]


def test_empty_plan() -> None:
    plan = plan_reads([])
    assert plan.points == () and plan.requests == ()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_registers": 126}, "max_registers"),
        ({"max_registers": 0}, "max_registers"),
        ({"max_bits": 2001}, "max_bits"),
        ({"max_gap": -1}, "max_gap"),
    ],
)
def test_limits_outside_modbus_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_reads([pt(0)], **kwargs)


def test_a_32_bit_point_needs_two_registers_per_request() -> None:
    with pytest.raises(ValueError, match=r"'wide'.*max_registers is 1"):
        plan_reads([pt(0, "int32", name="wide")], max_registers=1)


# --- property-style: 2000 random points --------------------------------------------------------------------


_REGISTER_TYPES = ["int16", "uint16", "int32", "uint32", "float32"]


def _random_points(rng: random.Random, n: int) -> list[ModbusPoint]:
    points = []
    for i in range(n):
        table = rng.choice(["holding", "holding", "input", "coil", "discrete"])
        type_ = "bool" if table in BIT_TABLES else rng.choice(_REGISTER_TYPES)
        # clustered addresses, so that gaps, overlaps and duplicates all happen
        base = rng.choice([0, 1000, 40000, 65000])
        address = min(base + int(rng.expovariate(1 / 300)), 65534)
        points.append(
            ModbusPoint.model_validate({"name": f"p{i}", "table": table, "type": type_, "address": address})
        )
    return points


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_plans_cover_every_point_exactly_once_within_limits(seed: int) -> None:
    rng = random.Random(seed)
    points = _random_points(rng, 2000)
    max_registers = rng.choice([2, 10, 64, 125])
    max_bits = rng.choice([8, 100, 2000])
    max_gap = rng.choice([0, 3, 8, 124])
    plan = plan_reads(points, max_registers=max_registers, max_bits=max_bits, max_gap=max_gap)

    assert plan.points == tuple(points)
    seen = [0] * len(points)
    for request in plan.requests:
        limit = max_bits if request.is_bit else max_registers
        assert 1 <= request.count <= limit
        assert request.start >= 0 and request.end <= 65536
        first = min(s.offset for s in request.slots)
        last = max(s.offset + points[s.point_index].width for s in request.slots)
        assert first == 0 and last == request.count, "a request reads no register beyond its points"
        for slot in request.slots:
            point = points[slot.point_index]
            seen[slot.point_index] += 1
            assert point.table == request.table
            assert request.start + slot.offset == point.address
            assert slot.offset >= 0 and slot.offset + point.width <= request.count
    assert seen == [1] * len(points)

    # per table, requests are sorted and two neighbours could not have been merged; they overlap only where a
    # point that overlaps the previous block's last point did not fit in it
    for table in ("holding", "input", "coil", "discrete"):
        mine = [r for r in plan.requests if r.table == table]
        limit = max_bits if table in BIT_TABLES else max_registers
        for a, b in itertools.pairwise(mine):
            assert a.start < b.start
            assert b.start - a.end > max_gap or b.end - a.start > limit

    # decoding through the plan gives what decoding each point alone gives
    memory = {t: [rng.randrange(0x10000) for _ in range(65536)] for t in ("holding", "input")}
    out: list[Any] = [None] * len(points)
    for request in plan.requests:
        if request.is_bit:
            block: list[Any] = [bool((request.start + k) % 3) for k in range(request.count)]
        else:
            block = memory[request.table][request.start : request.end]
        request.decode_into(block, out)
    for point, value in zip(points, out, strict=True):
        if point.is_bit:
            assert value == bool(point.address % 3)
        else:
            expected = decode(point, memory[point.table], point.address)
            assert value == expected or (value != value and expected != expected)  # NaN


# --- config models ------------------------------------------------------------------------------------------


def test_connection_defaults_and_bounds() -> None:
    c = ModbusConnection(host="10.0.0.5")
    assert (c.port, c.unit_id, c.word_order, c.max_registers, c.max_bits, c.max_gap) == (
        502,
        1,
        "big",
        125,
        2000,
        8,
    )
    for bad in (
        {"port": 0},
        {"unit_id": 248},
        {"max_registers": 126},
        {"max_gap": 125},
        {"word_order": "mid"},
    ):
        with pytest.raises(ValidationError):
            ModbusConnection(host="h", **bad)
    with pytest.raises(ValidationError, match="Extra inputs"):
        ModbusConnection(host="h", slave=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="needs a host"):
        ModbusConnection()
    with pytest.raises(ValidationError, match="a serial port is a device path"):
        ModbusConnection(transport="rtu", port=502)
    assert ModbusConnection.model_validate({"host": "h", "port": "5020"}).port == 5020


def test_rtu_connection() -> None:
    c = ModbusConnection(
        transport="rtu", port="/dev/ttyUSB0", unit_id=3, baudrate=9600, parity="N", stopbits=2
    )
    assert c.line == ("/dev/ttyUSB0", "rtu", 9600, "N", 2, 8)
    assert (ModbusConnection(transport="rtu", port="/dev/x").parity, c.byte_order) == ("E", "big")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"table": "holding", "type": "bool"}, "type 'bool' is for the 'coil' and 'discrete' tables"),
        ({"table": "coil", "type": "int16"}, "its type must be 'bool'"),
        ({"table": "discrete", "type": "uint16"}, "its type must be 'bool'"),
        ({"address": 65535, "type": "int32"}, "runs past the last address 65535"),
        ({"address": 65536}, "less than or equal to 65535"),
        ({"address": -1}, "greater than or equal to 0"),
        ({"table": "input", "writable": True}, "input table is read-only"),
        ({"type": "float128"}, "float64"),
        ({"type": "string"}, "a string needs `length`"),
        ({"type": "uint16", "length": 2}, "only a string has one"),
        ({"type": "int32", "bit": 3}, "`bit` selects bits of a 16-bit register"),
        ({"bit": 12, "bits": 5}, "bits 12..16 run past bit 15"),
        ({"bit": 1, "writable": True}, "cannot be written alone"),
        ({"type": "float32", "labels": {1: "on"}}, "needs an integer type"),
        ({"address": 65530, "type": "string", "length": 8}, "runs past the last address"),
        ({"address": 65533, "type": "float64"}, "runs past the last address"),
        ({"register": 3}, "Extra inputs"),
    ],
)
def test_point_validation_names_the_problem(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModbusPoint(name="p", **({"address": 0} | fields))


def test_point_fits_at_the_last_address() -> None:
    assert ModbusPoint(name="p", address=65535).width == 1
    assert ModbusPoint(name="p", address=65534, type="float32").width == 2


# --- the shipped profile -------------------------------------------------------------------------------------


def _profile_points() -> tuple[dict[str, Any], list[ModbusPoint]]:
    path = ModbusDriver.profiles_dir / "sunspec-inverter.toml"
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    defaults = raw.get("defaults", {})
    return raw, [ModbusPoint.model_validate(defaults | p) for p in raw["points"]]


def test_sunspec_profile_is_valid_and_reads_model_103_in_one_request() -> None:
    raw, points = _profile_points()
    assert raw["profile"]["name"] == "sunspec-inverter" and raw["profile"]["driver"] == "modbus"
    by_name = {p.name: p for p in points}
    assert len(by_name) == len(points), "point names are unique"
    for name in ("ac_power", "ac_current", "ac_voltage_an", "ac_frequency", "lifetime_energy", "dc_current",
                 "dc_voltage", "dc_power", "cabinet_temperature", "operating_state", "w_sf"):  # fmt: skip
        assert name in by_name
    for point in points:
        if point.scale_factor is not None:
            sf = by_name[point.scale_factor]
            assert sf.type == "sunssf" and not sf.publish
            assert point.unit
    assert all(point.sunspec for point in points)  # the profile's default
    assert by_name["ac_power"].address == 40083 and by_name["w_sf"].address == 40084
    assert by_name["lifetime_energy"].type == "acc32" and by_name["wh_sf"].address == 40095
    assert by_name["cabinet_temperature"].unit == "Cel" and by_name["tmp_sf"].address == 40106
    assert by_name["operating_state"].address == 40107 and by_name["operating_state"].unit is None
    plan = plan_reads(points)
    # model 103 in one request, the power limit (far away, writable) in its own
    assert spans(plan) == [("holding", 40069, 39), ("holding", 40300, 1)]
    assert by_name["power_limit"].writable
