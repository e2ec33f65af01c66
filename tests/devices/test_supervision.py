"""The kernel owns its tasks: a driver that crashes with a bug is restarted, and the gateway goes on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from edge.config import load_config
from edge.gateway import Gateway
from edge.plugins import Manifest, PluginRegistry
from edge.sdk.drivers import DeviceSpec, RawValue
from edge.sdk.points import PointConfig, Scalar
from tests.helpers import MosquittoProcess


class CounterConnection(BaseModel):
    crash_on_read: int = 2


class CounterPlan:
    def __init__(self, points: tuple[PointConfig, ...]) -> None:
        self.points = points


class CounterSession:
    """A device whose driver has a bug: its second read raises an unexpected exception."""

    def __init__(self, crash_on_read: int) -> None:
        self.reads = 0
        self.crash_on_read = crash_on_read

    async def connect(self) -> None:
        return None

    async def read(self, plan: Any) -> Sequence[RawValue]:
        self.reads += 1
        if self.reads == self.crash_on_read:
            raise RuntimeError("driver bug: index out of range")
        return [self.reads] * len(plan.points)

    async def write(self, point: PointConfig, raw_value: Scalar) -> None:
        return None

    async def close(self) -> None:
        return None


class CounterDriver:
    connection_model: ClassVar[type[BaseModel]] = CounterConnection
    point_model: ClassVar[type[PointConfig]] = PointConfig

    def compile(self, device: DeviceSpec) -> CounterPlan:
        return CounterPlan(device.points)

    def session(self, device: DeviceSpec) -> CounterSession:
        return CounterSession(device.connection.crash_on_read)  # type: ignore[attr-defined]


async def test_a_crashing_poller_is_restarted_and_keeps_its_sequence(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    (tmp_path / "counter.toml").write_text(
        '[profile]\nname = "counter"\ndriver = "counter"\n[[points]]\nname = "count"\n'
    )
    (tmp_path / "edge.toml").write_text(
        '[gateway]\nid = "gw"\ndata_dir = "data"\n'
        f'[bus]\nmode = "external"\nport = {mosquitto.port}\ntopic_prefix = "supervision"\n'
        '[[tenants]]\nid = "acme"\n[[sites]]\nid = "lab"\n'
        '[[devices]]\nname = "counter-1"\ndriver = "counter"\ntenant = "acme"\nsite = "lab"\n'
        'profile = "counter.toml"\npoll_interval = 0.05\n'
    )
    registry = PluginRegistry()
    registry.add_driver(Manifest("counter", "driver", "1.0.0", ">=1,<2"), CounterDriver())
    gateway = Gateway(load_config(tmp_path / "edge.toml", registry), registry)
    await gateway.start()
    try:
        async with asyncio.timeout(10):
            while gateway.stats.device("counter-1").polls < 5:
                await asyncio.sleep(0.05)
    finally:
        await gateway.stop()
    assert gateway.stats.task_restarts == {"poll-counter-1": 1}
    import sqlite3

    with sqlite3.connect(gateway.outbox.path) as db:
        sequences = [
            r[0]
            for r in db.execute(
                "SELECT sequence FROM outbox WHERE device IS NOT NULL ORDER BY position"  # telemetry and status
            )
        ]
    assert sequences == list(range(1, len(sequences) + 1))


class SwallowingSession(CounterSession):
    """A driver library that swallows cancellation, as some do: the gateway must still stop."""

    async def read(self, plan: Any) -> Sequence[RawValue]:
        with contextlib.suppress(asyncio.CancelledError):  # the bug under test
            await asyncio.sleep(0.02)
        return [1] * len(plan.points)


class SwallowingDriver(CounterDriver):
    def session(self, device: DeviceSpec) -> CounterSession:
        return SwallowingSession(0)


async def test_gateway_stops_promptly_even_if_a_driver_swallows_cancellation(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    (tmp_path / "counter.toml").write_text(
        '[profile]\nname = "counter"\ndriver = "counter"\n[[points]]\nname = "count"\n'
    )
    devices = "".join(
        f'[[devices]]\nname = "d{i}"\ndriver = "counter"\ntenant = "acme"\nsite = "lab"\nprofile = "counter.toml"\npoll_interval = 0.01\n'
        for i in range(20)
    )
    (tmp_path / "edge.toml").write_text(
        f'[gateway]\nid = "gw"\ndata_dir = "data"\n[bus]\nmode = "external"\nport = {mosquitto.port}\ntopic_prefix = "swallow"\n'
        '[[tenants]]\nid = "acme"\n[[sites]]\nid = "lab"\n' + devices
    )
    registry = PluginRegistry()
    registry.add_driver(Manifest("counter", "driver", "1.0.0", ">=1,<2"), SwallowingDriver())
    gateway = Gateway(load_config(tmp_path / "edge.toml", registry), registry)
    await gateway.start()
    await asyncio.sleep(0.5)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(gateway.stop(), 5)
    assert asyncio.get_running_loop().time() - started < 2
