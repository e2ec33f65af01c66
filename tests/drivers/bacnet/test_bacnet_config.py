"""The BACnet driver's pure parts: config validation, the read planner, value and quality mapping, units."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bacpypes3.basetypes import BinaryPV, EngineeringUnits, ErrorType, StatusFlags
from bacpypes3.primitivedata import CharacterString, Null, Real, Unsigned
from pydantic import ValidationError

from drivers.bacnet import (
    UNITS,
    BacnetConnection,
    BacnetDriver,
    BacnetPoint,
    decode,
    encode_write,
    plan_reads,
    qualify,
    tidy_real,
    unit_for,
)
from drivers.bacnet.plan import target_of
from edge.config.loader import parse_profile
from edge.plugins import read_manifest
from edge.sdk.errors import ConfigIssue
from edge.sdk.points import PointFault, Qualified, Quality


def p(name: str, object_type: str = "analog-input", instance: int = 1, **kw: Any) -> BacnetPoint:
    return BacnetPoint(name=name, object_type=object_type, instance=instance, **kw)


# ---- configuration -------------------------------------------------------------------------------


def test_connection_addresses_are_normalised_and_checked_without_name_lookups() -> None:
    conn = BacnetConnection(address="192.168.1.20", local_address="127.0.0.1/8:47809")
    assert conn.address == "192.168.1.20:47808"
    assert conn.local_address == "127.0.0.1/8:47809"
    assert BacnetConnection(address="127.0.0.1:47818").address == "127.0.0.1:47818"
    for bad in ("ahu.local", "300.1.1.1", "10.0.0.1:0", "10.0.0.1/24"):
        with pytest.raises(ValidationError):
            BacnetConnection(address=bad)
    with pytest.raises(ValidationError, match="device_instance"):
        BacnetConnection(address="10.0.0.1", device_instance=4194303)


def test_point_names_of_types_and_properties_are_canonical() -> None:
    point = p("x", object_type="analogValue", property="presentValue")
    assert (point.object_type, point.property, point.kind) == ("analog-value", "present-value", "analog")
    assert p("y", property="85").property == "present-value"  # by number
    assert p("z", property="512").property == "512"  # proprietary stays a number
    assert p("m", object_type="multi-state-value").kind == "multistate"
    assert p("pa", object_type="analog-value", property="priority-array", index=8).kind == "other"
    with pytest.raises(ValidationError, match="unknown BACnet object type"):
        p("bad", object_type="analog-thing")
    with pytest.raises(ValidationError, match="unknown BACnet property"):
        p("bad", property="present-valu")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"priority": 6}, "priority 6 is reserved"),
        ({"priority": 17}, "less than or equal to 16"),
        ({"object_type": "binary-input", "states": ["off"]}, "exactly"),
        ({"object_type": "multi-state-value", "states": ["a", "a"]}, "distinct"),
        ({"states": ["a", "b"]}, "binary and multi-state"),
        ({"object_type": "binary-value", "cov_increment": 1.0}, "analog"),
        ({"object_type": "binary-value", "scale": 10.0}, "cannot be scaled"),
    ],
)
def test_invalid_points_are_refused_with_the_reason(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        p("x", **fields)


def test_shipped_profiles_validate_and_match_the_simulator_layout() -> None:
    import tomllib

    driver = BacnetDriver()
    for name, count in (("ahu", 30), ("vav", 8)):
        path = Path(driver.profiles_dir) / f"{name}.toml"
        issues: list[ConfigIssue] = []
        points = parse_profile(tomllib.loads(path.read_text()), str(path), driver, "bacnet", issues)
        assert issues == [] and points is not None and len(points) == count
        assert all(isinstance(pt, BacnetPoint) for pt in points)
    assert read_manifest("drivers.bacnet").name == "bacnet"


# ---- planner -------------------------------------------------------------------------------------


def test_points_of_one_object_share_its_read_and_status_flags_come_along() -> None:
    points = [
        p("sat"),
        p("sp", "analog-value", 1),
        p("sat_name", property="object-name"),
        p("pa8", "analog-value", 1, property="priority-array", index=8),
        p("raw", "analog-input", 2, status_flags=False),
    ]
    plan = plan_reads(points, max_objects=16)
    assert len(plan.requests) == 1
    objects = {(str(o.object_id[0]), o.object_id[1]): o.properties for o in plan.requests[0].objects}
    assert [str(pr) for pr, _ in objects[("analog-input", 1)]] == [
        "present-value",
        "status-flags",
        "object-name",
    ]
    assert [(str(pr), i) for pr, i in objects[("analog-value", 1)]] == [
        ("present-value", None),
        ("status-flags", None),
        ("priority-array", 8),
    ]
    assert [str(pr) for pr, _ in objects[("analog-input", 2)]] == ["present-value"]  # status_flags = false
    assert sorted(plan.requests[0].targets) == [0, 1, 2, 3, 4]
    # COV carries present values and flags; the name and the priority slot are polled
    assert {t.index for t in plan.targets if t.cov_fed} == {0, 1, 4}
    assert [str(o[0]) for o in plan.cov_objects] == ["analog-input", "analog-value", "analog-input"]


def test_requests_hold_at_most_max_objects_and_subsets_keep_indices() -> None:
    points = [p(f"ai{i}", instance=i) for i in range(1, 36)]
    plan = plan_reads(points, max_objects=16)
    assert [len(r.objects) for r in plan.requests] == [16, 16, 3]
    assert plan.requests[2].targets == (32, 33, 34)
    sub = plan.subset([3, 20])
    assert len(sub) == 1 and sub[0].targets == (3, 20)
    flat = plan.requests[0].rpm_arguments()
    assert len(flat) == 32 and str(flat[0]) == "analog-input,1"
    with pytest.raises(ValueError):
        plan_reads(points, max_objects=0)


# ---- values and quality --------------------------------------------------------------------------


def test_declared_value_kinds_are_the_kinds_decoding_gives() -> None:
    """Home Assistant and Sparkplug describe a point by its declared kind before it is read: it must be the
    kind its decoded values have."""
    from edge.bus.ha_entities import kind_of

    cases = [
        (p("t"), Real(21.5)),
        (p("b", "binary-input"), BinaryPV("active")),
        (p("b", "binary-input", states=["off", "on"]), BinaryPV("inactive")),
        (p("m", "multi-state-value", states=["off", "auto"]), Unsigned(2)),
        (p("m", "multi-state-value"), Unsigned(2)),
    ]
    for point, raw in cases:
        assert point.value_kind == kind_of(point, decode(raw, target_of(0, point))), point  # type: ignore[arg-type]
    assert p("n", property="object-name").value_kind is None  # other properties: only a value tells


def test_reals_are_the_float32_the_device_holds() -> None:
    assert tidy_real(float(Real(21.94))) == 21.94
    assert tidy_real(float(Real(0.1))) == 0.1
    assert tidy_real(float(Real(123456.7))) == 123456.7
    assert decode(Real(21.94), target_of(0, p("t"))) == 21.94


def test_binary_and_multistate_values_with_and_without_state_texts() -> None:
    plain_bi = target_of(0, p("b", "binary-input"))
    texts_bi = target_of(0, p("b", "binary-input", states=["off", "on"]))
    assert decode(BinaryPV("active"), plain_bi) is True
    assert decode(BinaryPV("inactive"), texts_bi) == "off"
    mode = target_of(0, p("m", "multi-state-value", states=["off", "auto"]))
    assert decode(Unsigned(2), mode) == "auto"
    assert decode(Unsigned(2), target_of(0, p("m", "multi-state-value"))) == 2
    assert decode(Unsigned(3), mode) == Qualified(3, Quality.UNCERTAIN, "state 3 has no text (1..2)")
    assert decode(CharacterString("AHU-1"), target_of(0, p("n", property="object-name"))) == "AHU-1"
    assert decode(StatusFlags([1, 0, 0, 1]), target_of(0, p("f", property="status-flags"))) == (
        "in-alarm,out-of-service"
    )
    assert decode(Null(()), target_of(0, p("n"))) is None
    error = ErrorType(errorClass="object", errorCode="unknownObject")
    assert decode(error, plain_bi) == PointFault("bacnet error object: unknown-object")


@pytest.mark.parametrize(
    ("flags", "reliability", "expected"),
    [
        (None, None, 21.5),
        ((0, 0, 0, 0), "no-fault-detected", 21.5),
        ((0, 1, 0, 0), None, Qualified(None, Quality.BAD, "fault")),
        ((0, 1, 0, 0), "open-loop", Qualified(None, Quality.BAD, "fault (reliability: open-loop)")),
        ((0, 0, 0, 0), "over-range", Qualified(None, Quality.BAD, "fault (reliability: over-range)")),
        ((0, 0, 0, 1), None, Qualified(21.5, Quality.UNCERTAIN, "out of service")),
        ((0, 0, 1, 0), None, Qualified(21.5, Quality.GOOD, "overridden")),
        ((1, 0, 0, 0), None, Qualified(21.5, Quality.GOOD, "in alarm")),
        ((1, 0, 1, 1), None, Qualified(21.5, Quality.UNCERTAIN, "out of service, overridden, in alarm")),
        ((1, 1, 1, 1), None, Qualified(None, Quality.BAD, "fault")),
    ],
)
def test_status_flags_and_reliability_become_quality(
    flags: tuple[int, ...] | None, reliability: str | None, expected: object
) -> None:
    assert qualify(21.5, flags, reliability) == expected


def test_writes_encode_per_kind_and_null_relinquishes() -> None:
    sp = p("sp", "analog-value", writable=True, priority=8)
    value, priority = encode_write(sp, 22)
    assert (float(value), priority) == (22.0, 8)
    value, priority = encode_write(sp, None)
    assert isinstance(value, Null) and priority == 8
    fan = p("fan", "binary-value", states=["stop", "start"], writable=True)
    assert str(encode_write(fan, "start")[0]) == "active"
    assert str(encode_write(fan, False)[0]) == "inactive"
    mode = p("mode", "multi-state-value", states=["off", "auto", "on"], writable=True)
    assert int(encode_write(mode, "on")[0]) == 3
    assert int(encode_write(mode, 2.0)[0]) == 2
    oos = p("oos", property="out-of-service", writable=True)
    assert encode_write(oos, True) == (True, None)  # no priority for other properties
    for point, bad in ((sp, "warm"), (fan, "maybe"), (mode, 4), (mode, 0), (oos, None)):
        with pytest.raises(ValueError):
            encode_write(point, bad)


def test_units_map_standard_names_to_gateway_codes() -> None:
    standard = {
        str(EngineeringUnits(getattr(EngineeringUnits, k))) for k in vars(EngineeringUnits) if k[0] != "_"
    }
    assert set(UNITS) <= standard, set(UNITS) - standard  # no typo in the table
    assert unit_for("degrees-celsius") == "Cel"
    assert unit_for("cubic-meters-per-hour") == "m3/h"
    assert unit_for("percent-relative-humidity") == "%"
    assert unit_for("no-units") is None and unit_for(None) is None
