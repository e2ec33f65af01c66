"""The OPC UA driver plug-in object: models, plan compilation, sessions and discovery."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from drivers.opcua.config import OpcuaConnection, OpcuaPoint
from drivers.opcua.discovery import discover
from drivers.opcua.plan import OpcuaPlan, compile_plan
from drivers.opcua.session import OpcuaSession
from drivers.opcua.values import raw_range
from edge.sdk import DeviceSpec, DiscoveredDevice, PointConfig


class OpcuaDriver:
    """The object registered under the `edge.drivers` entry point `opcua`."""

    connection_model: ClassVar[type[BaseModel]] = OpcuaConnection
    point_model: ClassVar[type[PointConfig]] = OpcuaPoint
    profiles_dir: ClassVar[Path] = Path(__file__).parent / "profiles"

    def compile(self, device: DeviceSpec) -> OpcuaPlan:
        """The device's plan (pure): points in configuration order, node ids parsed. Raises ValueError."""
        connection = _connection(device)
        points = []
        for point in device.points:
            if not isinstance(point, OpcuaPoint):
                raise TypeError(f"device {device.name!r}: point {point.name!r} is not an OpcuaPoint")
            points.append(point)
        return compile_plan(tuple(points), connection.node_variables)

    def session(self, device: DeviceSpec) -> OpcuaSession:
        return OpcuaSession(device, self.compile(device), _connection(device))

    def raw_range(self, point: PointConfig) -> tuple[float, float] | None:
        """The numbers the point's configured `data_type` holds (`edge.sdk.SupportsValueRange`); a node whose
        type is only learned at connect is checked by `to_variant` when written."""
        if isinstance(point, OpcuaPoint) and point.data_type is not None:
            return raw_range(point.data_type)
        return None

    async def discover(
        self, target: dict[str, Any], progress: Callable[[str], None]
    ) -> list[DiscoveredDevice]:
        """Browse a server from a start node and propose a point map; see `drivers.opcua.discovery`."""
        return await discover(target, progress)


def _connection(device: DeviceSpec) -> OpcuaConnection:
    connection: Any = device.connection
    if not isinstance(connection, OpcuaConnection):
        raise TypeError(f"device {device.name!r}: connection is not an OpcuaConnection")
    return connection
