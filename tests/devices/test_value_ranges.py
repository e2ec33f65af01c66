"""The raw range each driver gives for a point's type (`SupportsValueRange`), and the kernel's engineering range
and refusals built from it (`DevicePoller.accepted_range`, `check_write_value`). Pure: nothing connects."""

from __future__ import annotations

import math
import sys

import pytest

from drivers.bacnet import BacnetDriver
from drivers.bacnet.config import BacnetConnection, BacnetPoint
from drivers.modbus import ModbusDriver
from drivers.modbus.config import ModbusConnection, ModbusPoint
from drivers.opcua import OpcuaDriver
from drivers.opcua.config import OpcuaPoint
from edge.devices.commands import check_write_value
from edge.devices.normalize import DeviceNormalizer
from edge.devices.polling import DevicePoller
from edge.sdk import DeviceSpec, SupportsValueRange, TenantContext, WriteRejected
from edge.sdk.points import PointConfig

FLOAT32 = 3.4028234663852886e38


def modbus(**fields: object) -> ModbusPoint:
    return ModbusPoint.model_validate({"name": "p", "address": 0, **fields})


def test_every_shipped_driver_says_its_ranges() -> None:
    for driver in (ModbusDriver(), BacnetDriver(), OpcuaDriver()):
        assert isinstance(driver, SupportsValueRange)
    m = ModbusDriver()
    assert m.raw_range(modbus(type="int16")) == (-32768, 32767)
    assert m.raw_range(modbus(type="uint32")) == (0, 2**32 - 1)
    assert m.raw_range(modbus(type="float32")) == (-FLOAT32, FLOAT32)
    assert m.raw_range(modbus(type="float64")) == (-sys.float_info.max, sys.float_info.max)
    assert m.raw_range(modbus(type="uint16", bit=4, bits=3)) == (0, 7)
    assert m.raw_range(modbus(table="coil", type="bool")) is None
    assert m.raw_range(modbus(type="string", length=4)) is None
    b = BacnetDriver()
    analog = {"name": "sp", "object_type": "analog-value", "instance": 1}
    assert b.raw_range(BacnetPoint.model_validate(analog)) == (-FLOAT32, FLOAT32)
    states = {
        "name": "mode",
        "object_type": "multi-state-value",
        "instance": 1,
        "states": ["off", "on", "auto"],
    }
    assert b.raw_range(BacnetPoint.model_validate(states)) == (1, 3)
    assert b.raw_range(BacnetPoint.model_validate({**analog, "object_type": "binary-value"})) is None
    o = OpcuaDriver()
    assert o.raw_range(OpcuaPoint(name="f", node="i=1", data_type="Int16")) == (-32768, 32767)
    assert o.raw_range(OpcuaPoint(name="f", node="i=1", data_type="Float")) == (-FLOAT32, FLOAT32)
    assert o.raw_range(OpcuaPoint(name="f", node="i=1", data_type="String")) is None
    assert o.raw_range(OpcuaPoint(name="f", node="i=1")) is None  # learned from the node at connect


def poller(points: list[PointConfig], driver: object, connection: object) -> DevicePoller:
    spec = DeviceSpec("dev", "acme", "hq", "x", connection, tuple(points), 1.0, 1.0, "p")  # type: ignore[arg-type]
    return DevicePoller(spec, driver, TenantContext("acme"), _NoSink(), gateway_id="gw")  # type: ignore[arg-type]


class _NoSink:
    async def append(self, event: object) -> None:
        return None


def test_the_range_goes_through_scale_and_offset_and_the_ends_are_accepted() -> None:
    points = [
        modbus(name="temp", type="int16", scale=0.1, unit="Cel", writable=True),
        modbus(name="flow", address=3, type="uint16", scale=-2.0, offset=10.0, writable=True),
    ]
    dev = poller(points, ModbusDriver(), ModbusConnection(host="127.0.0.1"))
    assert dev.accepted_range("temp") == pytest.approx((-3276.8, 3276.7))
    assert dev.accepted_range("flow") == (10.0 - 2 * 65535, 10.0)  # a negative scale swaps the ends
    check_write_value(dev, "temp", 3276.7)  # 32767 * 0.1 is 3276.7000000000003 in floats
    check_write_value(dev, "temp", -3276.8)
    check_write_value(dev, "temp", "text")  # text and states are the driver's to check
    check_write_value(dev, "temp", None)  # a release is the driver's to refuse (Modbus has none)
    for point, value, reason in (
        ("temp", 3276.8, "3276.8 is out of range: temp accepts -3276.8..3276.7 Cel"),
        ("temp", math.nan, "NaN is not a finite number: temp accepts -3276.8..3276.7 Cel"),
        ("temp", 10**400, "is out of range: temp accepts -3276.8..3276.7 Cel"),
        ("flow", 10.5, "10.5 is out of range: flow accepts -131060..10"),
    ):
        with pytest.raises(WriteRejected) as refused:
            check_write_value(dev, point, value)
        assert reason in refused.value.reason and refused.value.point == point
    with pytest.raises(WriteRejected, match=r"no such point \(points of dev: temp, flow\)"):
        check_write_value(dev, "tmep", 1)


def test_a_scale_factor_scales_the_range_once_it_is_read() -> None:
    points = [
        PointConfig(name="limit", scale_factor="sf", writable=True),
        PointConfig(name="sf", publish=False),
    ]
    normalizer = DeviceNormalizer("inv", points)
    assert normalizer.to_value("limit", 65535) is None  # the scale factor is not read yet
    normalizer.normalize([100, -2])
    assert normalizer.to_value("limit", 65535) == pytest.approx(655.35)


def test_without_a_range_only_non_finite_and_unscalable_numbers_are_refused() -> None:
    points = [BacnetPoint.model_validate({"name": "fan", "object_type": "binary-value", "instance": 1})]
    dev = poller(points, BacnetDriver(), BacnetConnection(address="127.0.0.1"))
    assert dev.accepted_range("fan") is None
    check_write_value(dev, "fan", 1)
    with pytest.raises(WriteRejected, match="Infinity is not a finite number: a point takes finite numbers"):
        check_write_value(dev, "fan", math.inf)
