"""Shared normalization: scaling, SunSpec scale factors, units and quality, the same for every driver."""

from __future__ import annotations

import pytest

from edge.devices.normalize import DeviceNormalizer
from edge.sdk.errors import WriteRejected
from edge.sdk.points import PointConfig, PointFault, Qualified, Quality

POINTS = [
    PointConfig(name="w", unit="W", scale_factor="w_sf", writable=True),
    PointConfig(name="w_sf", publish=False),
    PointConfig(name="volts", unit="V", scale=0.1),
    PointConfig(name="temp", unit="Cel", scale=0.5, offset=-40.0),
    PointConfig(name="state"),
    PointConfig(name="enabled"),
]


def test_scale_factor_scale_offset_and_units() -> None:
    out = DeviceNormalizer("inv", POINTS).normalize([1234, -1, 2297, 130, 4, True])
    assert out["w"] == {"value": 123.4, "unit": "W", "quality": "good", "raw": 1234}
    assert out["volts"] == {"value": 229.7, "unit": "V", "quality": "good", "raw": 2297}
    assert out["temp"]["value"] == 25.0
    assert out["state"] == {"value": 4, "unit": None, "quality": "good"}
    assert out["enabled"]["value"] is True
    assert "w_sf" not in out  # helper points are not published


def test_faults_become_bad_quality_with_the_reason() -> None:
    out = DeviceNormalizer("inv", POINTS).normalize(
        [PointFault("modbus exception 2 (illegal data address)"), 0, None, 1, 1, False]
    )
    assert out["w"]["quality"] == "bad"
    assert out["w"]["value"] is None
    assert "illegal data address" in out["w"]["reason"]
    assert out["volts"] == {"value": None, "unit": "V", "quality": "bad", "reason": "no value"}


def test_unreadable_scale_factor_never_gives_a_wrong_number() -> None:
    out = DeviceNormalizer("inv", POINTS).normalize([1234, PointFault("timeout"), 1, 1, 1, True])
    assert out["w"]["quality"] == "bad"
    assert out["w"]["value"] is None
    assert out["w"]["reason"] == "scale factor unavailable"


def test_to_raw_inverts_scaling_for_writes() -> None:
    normalizer = DeviceNormalizer("inv", POINTS)
    with pytest.raises(WriteRejected):  # the scale factor has not been read yet
        normalizer.to_raw("w", 100.0)
    normalizer.normalize([1234, -1, 2297, 130, 4, True])
    assert normalizer.to_raw("w", 123.4) == 1234
    assert normalizer.to_raw("temp", 25.0) == 130


def test_values_the_device_qualifies_keep_their_quality_and_reason() -> None:
    out = DeviceNormalizer("ahu", POINTS).normalize(
        [
            Qualified(1234, Quality.UNCERTAIN, "overridden"),
            -1,
            Qualified(None, Quality.BAD, "fault"),
            1,
            1,
            True,
        ]
    )
    assert out["w"] == {
        "value": 123.4,
        "unit": "W",
        "quality": "uncertain",
        "raw": 1234,
        "reason": "overridden",
    }
    assert out["volts"] == {"value": None, "unit": "V", "quality": "bad", "reason": "fault"}


def test_pushed_changes_recompute_only_the_points_they_affect() -> None:
    normalizer = DeviceNormalizer("inv", POINTS)
    normalizer.normalize([1234, -1, 2297, 130, 4, True])
    assert normalizer.normalize_changes({2: 2300}) == {
        "volts": {"value": 230.0, "unit": "V", "quality": "good", "raw": 2300}
    }
    # a new scale factor changes the point that depends on it, though its own raw value did not change
    assert normalizer.normalize_changes({1: -2}) == {
        "w": {"value": 12.34, "unit": "W", "quality": "good", "raw": 1234}
    }
    assert normalizer.normalize_changes({4: 5}) == {"state": {"value": 5, "unit": None, "quality": "good"}}


# ---- report by exception --------------------------------------------------------------------------------

RBE = [
    PointConfig(name="power", unit="W", report_deadband=50.0),
    PointConfig(name="voltage", unit="V", report_deadband_percent=1.0),
    PointConfig(name="both", report_deadband=5.0, report_deadband_percent=10.0),
    PointConfig(name="status", max_silence=60.0),
    PointConfig(name="always"),
]


def _reported(normalizer: DeviceNormalizer, raw: list[object], now: float) -> set[str]:
    return set(normalizer.report(normalizer.normalize(raw), now))


def test_without_rules_every_sample_is_reported_as_it_is() -> None:
    normalizer = DeviceNormalizer("inv", POINTS)
    points = normalizer.normalize([1234, -1, 2297, 130, 4, True])
    assert normalizer.report(points, 0.0) is points


def test_deadbands_suppress_small_moves_and_pass_larger_ones() -> None:
    n = DeviceNormalizer("inv", RBE)
    assert _reported(n, [1000, 230.0, 100, "ok", 1], 0.0) == {"power", "voltage", "both", "status", "always"}
    assert _reported(n, [1050, 232.2, 104, "ok", 1], 1.0) == {"always"}  # within every band (50 W, 1 %, 5)
    assert _reported(n, [1051, 232.4, 111, "ok", 1], 2.0) == {"power", "voltage", "both", "always"}
    # `both`: 111 -> 117 leaves the absolute band (5) but not the 10 % one: still within
    assert _reported(n, [1051, 232.4, 117, "ok", 1], 3.0) == {"always"}


def test_the_band_is_around_the_last_published_value_not_the_last_read() -> None:
    n = DeviceNormalizer("inv", RBE)
    _reported(n, [1000, 230.0, 100, "ok", 1], 0.0)
    for step, power in enumerate((1030, 1045, 1049)):  # creeping: each read within 50 W of the last one
        assert "power" not in _reported(n, [power, 230.0, 100, "ok", 1], 1.0 + step)
    assert "power" in _reported(n, [1051, 230.0, 100, "ok", 1], 9.0)  # 51 W from the published 1000


def test_quality_changes_and_text_changes_are_always_reported() -> None:
    n = DeviceNormalizer("inv", RBE)
    _reported(n, [1000, 230.0, 100, "ok", 1], 0.0)
    assert _reported(n, [PointFault("timeout"), 230.0, 100, "fault", 1], 1.0) == {"power", "status", "always"}
    assert "power" in _reported(n, [1000, 230.0, 100, "fault", 1], 2.0)  # good again, same value


def test_max_silence_is_a_heartbeat() -> None:
    n = DeviceNormalizer("inv", RBE)
    _reported(n, [1000, 230.0, 100, "ok", 1], 0.0)
    assert "status" not in _reported(n, [1000, 230.0, 100, "ok", 1], 59.9)
    assert "status" in _reported(n, [1000, 230.0, 100, "ok", 1], 60.0)
    assert "status" not in _reported(n, [1000, 230.0, 100, "ok", 1], 119.0)  # 59 s after that heartbeat
    assert "power" not in _reported(n, [1000, 230.0, 100, "ok", 1], 10_000.0)  # deadband only: no heartbeat


def test_report_by_exception_fields_are_validated() -> None:
    with pytest.raises(ValueError, match="report_deadband"):
        PointConfig(name="p", report_deadband=-1.0)
    with pytest.raises(ValueError, match="max_silence"):
        PointConfig(name="p", max_silence=0)
