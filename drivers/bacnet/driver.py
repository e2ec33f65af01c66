"""The BACnet/IP driver plug-in: compiles point maps, opens sessions on shared local stacks, discovers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from drivers.bacnet.config import BacnetConnection, BacnetPoint
from drivers.bacnet.discovery import discover
from drivers.bacnet.ede import EDE_FORMAT, read_ede, read_state_texts, write_ede
from drivers.bacnet.plan import BacnetPlan, plan_reads
from drivers.bacnet.session import BacnetSession
from drivers.bacnet.stack import StackPool
from drivers.bacnet.values import raw_range
from edge.sdk import DeviceSpec, DiscoveredDevice, PointConfig, PointList


class BacnetDriver:
    """The object registered under the `edge.drivers` entry point `bacnet`.

    One instance serves every BACnet device of a gateway: its sessions share one local BACnet/IP
    application per `local_address` (see `drivers.bacnet.stack`).
    """

    connection_model: ClassVar[type[BaseModel]] = BacnetConnection
    point_model: ClassVar[type[PointConfig]] = BacnetPoint
    profiles_dir: ClassVar[Path] = Path(__file__).parent / "profiles"
    point_list_formats: ClassVar[tuple[str, ...]] = (EDE_FORMAT,)

    def __init__(self) -> None:
        self._pool = StackPool()

    def read_point_list(self, text: str, format: str, companion: str | None = None) -> PointList:
        """An EDE file's points by device instance, with states from its state texts file (`companion`)
        (`edge.sdk.SupportsPointLists`, see `drivers.bacnet.ede`)."""
        if format != EDE_FORMAT:
            raise ValueError(f"unknown BACnet point list format {format!r}")
        return read_ede(text, read_state_texts(companion) if companion is not None else None)

    def write_point_list(self, devices: Sequence[DeviceSpec], format: str) -> str:
        """An EDE file of every BACnet device and point of `devices`."""
        if format != EDE_FORMAT:
            raise ValueError(f"unknown BACnet point list format {format!r}")
        return write_ede(devices)

    def raw_range(self, point: PointConfig) -> tuple[float, float] | None:
        """The raw numbers the point's present value holds (`edge.sdk.SupportsValueRange`)."""
        return raw_range(point) if isinstance(point, BacnetPoint) else None

    def compile(self, device: DeviceSpec) -> BacnetPlan:
        """The device's read plan (pure). Raises `TypeError` if the kernel did not validate with our models."""
        connection: Any = device.connection
        if not isinstance(connection, BacnetConnection):
            raise TypeError(f"device {device.name!r}: connection is not a BacnetConnection")
        points = []
        for point in device.points:
            if not isinstance(point, BacnetPoint):
                raise TypeError(f"device {device.name!r}: point {point.name!r} is not a BacnetPoint")
            points.append(point)
        return plan_reads(points, max_objects=connection.max_objects_per_request)

    def session(self, device: DeviceSpec) -> BacnetSession:
        return BacnetSession(self._pool, device)

    async def discover(
        self, target: dict[str, Any], progress: Callable[[str], None]
    ) -> list[DiscoveredDevice]:
        """Who-Is, list the I-Am answers, and for `target["device"]` propose a point map (see README)."""
        return await discover(self._pool, target, progress)
