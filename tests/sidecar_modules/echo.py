"""Isolated test modules run by the SDK runner: Echo republishes what it receives, Hog eats memory, Spin
burns CPU, Ticks works periodically (`context.every`)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from edge.sdk.events import StoredEvent
from edge.sdk.modules import Health
from edge.sdk.tenancy import current_tenant

ECHO = "org.example.echo"
TICK = "org.example.tick"


class EchoData(BaseModel):
    sequence: int
    pid: int


class Echo:
    """Publishes `{sequence, pid}` for every telemetry event, so a test counts what arrived, by sequence."""

    async def on_init(self, context: Any) -> None:
        import os

        self.context = context
        self.pid = os.getpid()
        self.handled = 0
        self.delay = float(context.config.get("delay", 0.0))
        context.subscribe(["org.edgegw.telemetry"], self.handle)

    async def on_enable(self) -> None: ...
    async def on_disable(self) -> None: ...

    async def on_health_check(self) -> Health:
        return Health(True, f"{self.handled} events")

    async def handle(self, event: StoredEvent) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        await self.context.publish(ECHO, event.subject, {"sequence": event.sequence, "pid": self.pid})
        self.handled += 1


class Hog(Echo):
    """Grows by 16 MiB every 50 ms: the supervisor must end it at its memory limit."""

    async def on_enable(self) -> None:
        self.hoard: list[bytearray] = []
        self.task = asyncio.create_task(self._grow())

    async def _grow(self) -> None:
        while True:
            self.hoard.append(bytearray(16 << 20))
            await asyncio.sleep(0.05)


class Spin(Echo):
    """Burns a core in a thread (its event loop still answers health checks): the CPU limit must end it."""

    async def on_enable(self) -> None:
        import threading

        def spin() -> None:
            while True:
                pass

        threading.Thread(target=spin, daemon=True).start()


class Ticks(Echo):
    """Publishes `{n, pid}` on each tick of each entitled tenant (`context.every`); every second tick of a
    tenant then raises."""

    async def on_init(self, context: Any) -> None:
        await super().on_init(context)
        self.ticks: dict[str, int] = {}
        context.every(0.1, self.tick)

    async def tick(self, now: float) -> None:
        tenant = current_tenant().tenant_id
        n = self.ticks[tenant] = self.ticks.get(tenant, 0) + 1
        await self.context.publish(TICK, "gw", {"n": n, "pid": self.pid})
        if n % 2 == 0:
            raise RuntimeError(f"tick {n} failed")
