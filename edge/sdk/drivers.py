"""The small interface every driver plug-in implements.

A driver does raw I/O only. The kernel validates a device's connection and points with the driver's models,
asks the driver to compile them once into a read plan (a pure function), then polls through a session:
`connect`, `read(plan)`, `write`, `close`. Scaling, units and quality are applied afterwards by
`edge.devices.normalize`, the same way for every protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from edge.sdk.points import PointConfig, PointFault, Qualified, Scalar

__all__ = [
    "DeviceSession",
    "DeviceSpec",
    "DiscoveredDevice",
    "Driver",
    "PointList",
    "PointListError",
    "PointRow",
    "PushReceiver",
    "RawValue",
    "ReadPlan",
    "SupportsDiscovery",
    "SupportsPointLists",
    "SupportsPush",
    "SupportsValueRange",
]


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device as the kernel hands it to its driver, fully validated."""

    name: str
    tenant: str
    site: str
    driver: str
    connection: BaseModel
    points: tuple[PointConfig, ...]
    poll_interval: float
    timeout: float
    profile: str
    mode: str = (
        "auto"  # "auto": take pushed changes when the driver offers them (SupportsPush); "poll": always poll
    )


@runtime_checkable
class ReadPlan(Protocol):
    """A compiled plan; `points` gives the order of the values `DeviceSession.read` returns."""

    @property
    def points(self) -> Sequence[PointConfig]: ...


RawValue = Scalar | PointFault | Qualified | None


@runtime_checkable
class DeviceSession(Protocol):
    """One device's connection. Errors are raised as `edge.sdk.errors.DeviceError` subclasses."""

    async def connect(self) -> None:
        """Open the connection; raises `DeviceUnreachable`."""

    async def read(self, plan: Any) -> Sequence[RawValue]:
        """Read every point of the plan, in `plan.points` order; a failed point is a `PointFault`.

        Raises `DeviceUnreachable` when nothing at all could be read."""

    async def write(self, point: PointConfig, raw_value: Scalar | None) -> str | None:
        """Write a raw (already de-scaled) value; raises `WriteRejected` or `DeviceUnreachable`.

        `None` releases the point (BACnet relinquish); a driver without such a notion raises WriteRejected.
        Returns None, or (kernel API 1.5) a note the user is shown with the success: the write took effect
        but the device answered something else worth knowing (a BACnet error after applying it)."""

    async def close(self) -> None: ...


@runtime_checkable
class Driver(Protocol):
    """The plug-in object registered under the `edge.drivers` entry point."""

    connection_model: ClassVar[type[BaseModel]]
    point_model: ClassVar[type[PointConfig]]

    def compile(self, device: DeviceSpec) -> ReadPlan:
        """Turn the device's points into a read plan. Pure: no I/O."""

    def session(self, device: DeviceSpec) -> DeviceSession:
        """Create (not connect) a session for one device."""


@dataclass(frozen=True)
class DiscoveredDevice:
    """A device found on the network, with what it takes to commission it."""

    address: str  # how the driver reaches it, for people: "127.0.0.1:47808", "opc.tcp://host:4840/"
    identity: dict[str, str]  # vendor, model, serial, device instance...: whatever the protocol tells
    connection: dict[str, Any]  # ready to become the device's [devices.connection] table
    points: list[dict[str, Any]] = field(default_factory=list)  # a proposed point map (profile [[points]])
    profile_name: str = ""  # a suggested name for the proposed profile


@runtime_checkable
class SupportsDiscovery(Protocol):
    """Optional: a driver that can find devices (`edge device discover <driver>`)."""

    async def discover(
        self, target: dict[str, Any], progress: Callable[[str], None]
    ) -> list[DiscoveredDevice]:
        """Search `target` (driver-specific keys, e.g. network, url, port range); report progress lines."""


class PushReceiver(Protocol):
    """What the kernel gives a pushing driver: where to deliver changes, and how to say the feed is gone."""

    def values(self, changes: Mapping[int, RawValue], sample_time: float | None = None) -> None:
        """Changed points by their index in `plan.points`; `sample_time` defaults to now."""

    def lost(self, reason: str) -> None:
        """The subscription or connection is gone; the kernel reconnects and subscribes again."""


@runtime_checkable
class SupportsPush(Protocol):
    """Optional, on a session: deliver changes as the device reports them (COV, OPC UA subscriptions)."""

    async def subscribe(self, plan: Any, receiver: PushReceiver) -> None:
        """Called after `connect()`. Deliver every point's current value first, then changes, until `close()`.

        Raise `SubscriptionUnsupported` to have the kernel poll this device instead."""


@runtime_checkable
class SupportsValueRange(Protocol):
    """Optional, on a driver: the raw numbers a point's data type can hold (an int16 register, a BACnet Real).

    The kernel passes the range through the point's scaling and refuses a write outside it before the device
    sees it, telling the user what the point accepts in engineering units."""

    def raw_range(self, point: PointConfig) -> tuple[float, float] | None:
        """(lowest, highest) raw number `point` can take; None when it takes no numbers or the type is unknown."""


@dataclass(frozen=True, slots=True)
class PointRow:
    """One point read from a point list file, before validation: its fields as the driver's point model takes
    them, the file line it came from, and the device it belongs to when the file lists several (an EDE file's
    device instance, a CSV file's `device` column)."""

    line: int
    fields: dict[str, Any]
    device: str = ""


@dataclass(frozen=True, slots=True)
class PointList:
    """What a point list file holds: its rows, and notes on what was left out (objects that are no points)."""

    rows: list[PointRow]
    notes: list[str] = field(default_factory=list)
    devices: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # device key -> connection fields it gives


class PointListError(ValueError):
    """A point list file that cannot be read: every problem with its line number (1-based); `in_companion`
    when the problems are in the companion file (an EDE file's state texts)."""

    def __init__(self, problems: Sequence[tuple[int, str]], *, in_companion: bool = False) -> None:
        self.problems = list(problems)
        self.in_companion = in_companion
        super().__init__("; ".join(f"line {line}: {reason}" for line, reason in self.problems))


@runtime_checkable
class SupportsPointLists(Protocol):
    """Optional, on a driver: point list formats of its protocol besides the kernel's CSV (BACnet EDE).

    `edge point import` and `edge point export` use them; the kernel validates the rows with `point_model`."""

    point_list_formats: ClassVar[tuple[str, ...]]

    def read_point_list(self, text: str, format: str, companion: str | None = None) -> PointList:
        """Parse `text` (and `companion`, the text of a file it refers to, such as an EDE file's state texts);
        raises `PointListError` naming each bad line."""

    def write_point_list(self, devices: Sequence[DeviceSpec], format: str) -> str:
        """The file text listing every point of `devices`."""
