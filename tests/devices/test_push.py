"""Drivers that push changes (COV, OPC UA subscriptions): changes become events without polling."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel

from edge.config import load_config
from edge.gateway import Gateway
from edge.plugins import Manifest, PluginRegistry
from edge.sdk.drivers import DeviceSpec, PushReceiver, RawValue
from edge.sdk.errors import SubscriptionUnsupported
from edge.sdk.points import PointConfig, Scalar
from tests.helpers import MosquittoProcess


class FeedConnection(BaseModel):
    supports_push: bool = True
    drop_after: int = 0  # the feed is lost after this many pushes (0: never)


class Plan:
    def __init__(self, points: tuple[PointConfig, ...]) -> None:
        self.points = points


class FeedSession:
    """A device that reports its two counters on change; `reads` counts how often it was polled."""

    def __init__(self, connection: FeedConnection) -> None:
        self.connection = connection
        self.reads = 0
        self.subscriptions = 0
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        return None

    async def read(self, plan: Any) -> Sequence[RawValue]:
        self.reads += 1
        return [self.reads, 0]

    async def subscribe(self, plan: Any, receiver: PushReceiver) -> None:
        if not self.connection.supports_push:
            raise SubscriptionUnsupported("feed", "no COV here")
        self.subscriptions += 1
        receiver.values({0: 0, 1: 0})  # current values first
        self._task = asyncio.create_task(self._push(receiver))

    async def _push(self, receiver: PushReceiver) -> None:
        for n in range(1, 10_000):
            await asyncio.sleep(0.05)
            receiver.values({0: n})  # only the first point changes
            if n == self.connection.drop_after:
                receiver.lost("server shut down")
                return

    async def write(self, point: PointConfig, raw_value: Scalar) -> None:
        return None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class FeedDriver:
    connection_model: ClassVar[type[BaseModel]] = FeedConnection
    point_model: ClassVar[type[PointConfig]] = PointConfig

    def __init__(self) -> None:
        self.sessions: list[FeedSession] = []

    def compile(self, device: DeviceSpec) -> Plan:
        return Plan(device.points)

    def session(self, device: DeviceSpec) -> FeedSession:
        session = FeedSession(device.connection)  # type: ignore[arg-type]
        self.sessions.append(session)
        return session


async def _run(
    tmp_path: Path, broker: MosquittoProcess, connection: str, seconds: float
) -> tuple[Gateway, FeedDriver]:
    (tmp_path / "feed.toml").write_text(
        '[profile]\nname = "feed"\ndriver = "feed"\n[[points]]\nname = "count"\n[[points]]\nname = "other"\n'
    )
    (tmp_path / "edge.toml").write_text(
        f'[gateway]\nid = "gw"\ndata_dir = "data"\n[bus]\nmode = "external"\nport = {broker.port}\ntopic_prefix = "push"\n'
        '[[tenants]]\nid = "acme"\n[[sites]]\nid = "lab"\n'
        f'[[devices]]\nname = "feed-1"\ndriver = "feed"\ntenant = "acme"\nsite = "lab"\nprofile = "feed.toml"\n'
        f"poll_interval = 0.2\nconnection = {{ {connection} }}\n"
    )
    driver = FeedDriver()
    registry = PluginRegistry()
    registry.add_driver(Manifest("feed", "driver", "1.0.0", ">=1,<2"), driver)
    gateway = Gateway(load_config(tmp_path / "edge.toml", registry), registry)
    await gateway.start()
    await asyncio.sleep(seconds)
    await gateway.stop()
    return gateway, driver


def _events(gateway: Gateway) -> list[dict[str, Any]]:
    with sqlite3.connect(gateway.outbox.path) as db:
        return [orjson.loads(r[0]) for r in db.execute("SELECT body FROM outbox ORDER BY position")]


async def test_pushed_changes_become_events_with_only_the_changed_points(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    gateway, driver = await _run(tmp_path, mosquitto, "supports_push = true", 1.0)
    telemetry = [e for e in _events(gateway) if e["type"] == "org.edgegw.telemetry"]
    assert driver.sessions[0].reads == 0  # never polled
    assert set(telemetry[0]["data"]["points"]) == {"count", "other"}  # the initial values
    assert len(telemetry) >= 8
    assert all(set(e["data"]["points"]) == {"count"} for e in telemetry[1:])
    counts = [e["data"]["points"]["count"]["value"] for e in telemetry]
    assert counts == sorted(counts)
    device_events = [e for e in _events(gateway) if "sequence" in e]  # status events share the sequence
    assert [int(e["sequence"]) for e in device_events] == list(range(1, len(device_events) + 1))


async def test_a_lost_feed_is_marked_bad_then_resubscribed(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    gateway, driver = await _run(tmp_path, mosquitto, "drop_after = 3", 2.5)
    events = _events(gateway)
    statuses = [e["data"]["status"] for e in events if e["type"] == "org.edgegw.device.status"]
    assert statuses[:3] == ["up", "down", "up"]
    down = next(
        e
        for e in events
        if e["type"] == "org.edgegw.telemetry" and e["data"]["points"]["count"]["quality"] == "bad"
    )
    assert down["data"]["points"]["count"]["reason"] == "server shut down"
    assert driver.sessions[0].subscriptions >= 2


async def test_a_device_that_cannot_push_is_polled(tmp_path: Path, mosquitto: MosquittoProcess) -> None:
    gateway, driver = await _run(tmp_path, mosquitto, "supports_push = false", 1.0)
    assert driver.sessions[0].reads >= 4
    telemetry = [e for e in _events(gateway) if e["type"] == "org.edgegw.telemetry"]
    assert all(set(e["data"]["points"]) == {"count", "other"} for e in telemetry)
