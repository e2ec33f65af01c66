"""BACnet devices behind a router, and the gateway as a BBMD's foreign device (issue 23).

The router simulator (simulators.bacnet_router: bacpypes3's own router and BBMD) joins BACnet/IP network 1 to
network 2, where controllers 3001 and 3002 sit at MAC 10 and 11, as on an MS/TP trunk; controller 3001 has 303
objects, so its object list arrives in segments. The gateway's driver finds the networks with
Who-Is-Router-To-Network, finds the controllers with a Who-Is to network 2, reads, writes and subscribes to
them through the router, and registers as a foreign device whose registration the BBMD sees renewed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import pytest_asyncio
from pydantic import ValidationError

from drivers.bacnet import BacnetConnection, BacnetDriver, BacnetPoint
from edge.sdk.drivers import DeviceSpec, RawValue
from edge.sdk.errors import DeviceUnreachable
from simulators.bacnet_router import RoutedSite
from tests.helpers import free_udp_port, until

pytestmark = pytest.mark.asyncio(loop_scope="module")

POINTS = (
    BacnetPoint(name="zone-temp", object_type="analog-input", instance=1, unit="Cel"),
    BacnetPoint(name="setpoint", object_type="analog-value", instance=1, writable=True, priority=8),
    BacnetPoint(name="occupancy", object_type="binary-input", instance=1),
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site() -> AsyncIterator[RoutedSite]:
    async with RoutedSite(free_udp_port(), devices=2, objects=300) as routed:
        yield routed


def local() -> str:
    return f"127.0.0.1/8:{free_udp_port()}"


def spec(**connection: Any) -> DeviceSpec:
    return DeviceSpec(
        "ctl-3001", "t", "s", "bacnet", BacnetConnection(**connection), POINTS, 1.0, 1.0, "routed"
    )


class Receiver:
    def __init__(self) -> None:
        self.changes: list[dict[int, RawValue]] = []

    def values(self, changes: Mapping[int, RawValue], sample_time: float | None = None) -> None:
        self.changes.append(dict(changes))

    def lost(self, reason: str) -> None:
        self.changes.append({-1: reason})


async def test_discovery_lists_the_networks_and_finds_the_devices_behind_the_router(site: RoutedSite) -> None:
    lines: list[str] = []
    gateway_side = local()
    target = {"router": site.router_address, "local": gateway_side, "timeout": 1.0, "points": True}
    found = await BacnetDriver().discover(target, lines.append)
    assert (
        f"networks behind routers, from router {site.router_address}: 2 (router {site.router_address})"
        in lines
    )
    assert [d.connection for d in found] == [
        {"network": 2, "mac": f"0x{mac:02x}", "router": site.router_address, "device_instance": instance,
         "local_address": gateway_side}
        for instance, mac in ((3001, 10), (3002, 11))
    ]  # fmt: skip
    assert [d.identity["network"] for d in found] == ["2", "2"] and found[0].address == "2:0x0a"
    points = {p["name"]: p for p in found[0].points}
    assert len(points) == 303  # the whole object list: 305 objects, read in segments through the router
    assert points["zone-temp"]["brick"] == "Zone_Air_Temperature_Sensor"
    assert points["zone-temp-setpoint"]["writable"] is True


async def test_a_routed_device_is_read_written_and_subscribed(site: RoutedSite) -> None:
    driver = BacnetDriver()
    device = spec(
        network=2, mac="10", router=site.router_address, device_instance=3001, local_address=local()
    )
    session = driver.session(device)
    plan = driver.compile(device)
    await session.connect()
    try:
        site.set_value(3001, "zone-temp", 22.5)
        assert await session.read(plan) == [22.5, 21.0, False]
        await session.write(POINTS[1], 23.5)
        assert site.controller(3001).value("zone-temp-setpoint") == 23.5
        receiver = Receiver()
        await session.subscribe(plan, receiver)
        site.set_value(3001, "zone-temp", 25.0)
        await until(
            lambda: any(c.get(0) == 25.0 for c in receiver.changes), 5, "a COV notification via the router"
        )
    finally:
        await session.close()


async def test_an_unknown_network_says_no_router_answered(site: RoutedSite) -> None:
    session = BacnetDriver().session(
        spec(network=7, mac="10", router=site.router_address, device_instance=3001, local_address=local())
    )
    with pytest.raises(DeviceUnreachable, match="no router to network 7 answered Who-Is-Router-To-Network"):
        await session.connect()


async def test_a_foreign_device_registration_is_renewed(site: RoutedSite) -> None:
    """As a foreign device, the router is found by broadcast (through the BBMD) and the BBMD sees the
    registration renewed before its time to live runs out (bacpypes3 re-registers every `bbmd_ttl` s)."""
    gateway_side = local()
    port = int(gateway_side.rsplit(":", 1)[1])
    device = spec(
        network=2,
        mac="11",
        device_instance=3002,
        local_address=gateway_side,
        bbmd=site.router_address,
        bbmd_ttl=5,
    )
    driver = BacnetDriver()
    session = driver.session(device)
    await session.connect()
    try:
        entry = await until(
            lambda: next((e for e in site.foreign_devices() if e[0] == f"127.0.0.1:{port}"), None),
            5,
            "registered",
        )
        assert entry[1] == 5
        lowest = entry[2]
        started = time.monotonic()

        def renewed() -> bool:
            nonlocal lowest
            remaining = next(e[2] for e in site.foreign_devices() if e[0] == f"127.0.0.1:{port}")
            lowest = min(lowest, remaining)
            return remaining > lowest  # the countdown went back up: a new registration arrived

        await until(renewed, 12, "the registration renewed")
        assert time.monotonic() - started < 10  # within its time to live plus the BBMD's grace
        assert (await session.read(driver.compile(device)))[0] == 21.0
    finally:
        await session.close()


async def test_a_device_with_a_six_byte_mac_behind_the_router() -> None:
    """Stations of a BACnet/IP network behind a router have 6-byte MACs (IPv4 address and port): found,
    read, written and subscribed with their MAC as discovery writes it."""
    async with RoutedSite(free_udp_port(), devices=1, mac_length=6) as routed:
        target = {"router": routed.router_address, "local": local(), "timeout": 1.0}
        found = await BacnetDriver().discover(target, lambda _: None)
        assert [(d.connection["mac"], d.address) for d in found] == [("0x0a00000abac0", "2:0x0a00000abac0")]
        driver = BacnetDriver()
        device = spec(**{**found[0].connection, "local_address": local()})
        session = driver.session(device)
        await session.connect()
        try:
            routed.set_value(3001, "zone-temp", 19.5)
            assert (await session.read(driver.compile(device)))[0] == 19.5
            await session.write(POINTS[1], 20.5)
            assert routed.controller(3001).value("zone-temp-setpoint") == 20.5
            receiver = Receiver()
            await session.subscribe(driver.compile(device), receiver)
            routed.set_value(3001, "zone-temp", 18.0)
            await until(lambda: any(c.get(0) == 18.0 for c in receiver.changes), 5, "a COV notification")
        finally:
            await session.close()


async def test_routed_connections_are_checked() -> None:
    assert BacnetConnection(network=2, mac="0A").target == "2:0x0a"
    assert BacnetConnection.model_validate({"network": 2, "mac": 10}).target == "2:0x0a"  # mac = 10 in TOML
    with pytest.raises(ValidationError, match="needs its `mac` there"):
        BacnetConnection(network=2)
    with pytest.raises(ValidationError, match="a routed device has no `address`"):
        BacnetConnection(network=2, mac="10", address="127.0.0.1")
    with pytest.raises(ValidationError, match="is not a MAC address"):
        BacnetConnection(network=2, mac="ten")
    with pytest.raises(ValidationError, match="give the device's `address`"):
        BacnetConnection()
    assert BacnetConnection(network=5, mac="0a:00:00:0a:ba:c0").target == "5:0x0a00000abac0"
