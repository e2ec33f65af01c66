"""Isolated test modules run by the SDK runner: Echo republishes what it receives, Hog eats memory, Spin
burns CPU, Ticks works periodically (`context.every`); the chaos ones: Leak keeps a piece of every event,
Deadlock's handler waits on locks in the opposite order of its own background task, Freeze blocks its event
loop in a handler (each once: in the first life that finds no `marker` file), CrashAtStart fails in `on_init`
every time."""

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


class Leak(Echo):
    """Echoes, and keeps 1 MiB per event it handles (a cache nobody empties): RSS grows with the load."""

    async def on_enable(self) -> None:
        self.kept: list[bytearray] = []

    async def handle(self, event: StoredEvent) -> None:
        await super().handle(event)
        self.kept.append(bytearray(1 << 20))


def _first_life(config: dict[str, Any]) -> bool:
    """True in the first process that asks (it leaves the `marker` file behind): a hang that happens once."""
    import os

    try:
        os.close(os.open(config["marker"], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


class Deadlock(Echo):
    """After `hang_after` events, the handler takes lock A then B while a background task holds B and waits
    for A: both wait forever. The event loop itself stays responsive (health checks answer ok)."""

    async def on_enable(self) -> None:
        self.a, self.b = asyncio.Lock(), asyncio.Lock()
        self.after = int(self.context.config.get("hang_after", 50))
        self.hangs = _first_life(self.context.config)

        async def other_order() -> None:
            async with self.b:
                await asyncio.sleep(0.2)  # long enough for the handler to take A
                async with self.a:
                    pass

        self.armed: asyncio.Task[None] | None = None
        self._other_order = other_order

    async def handle(self, event: StoredEvent) -> None:
        if self.hangs and self.handled >= self.after:
            if self.armed is None:
                self.armed = asyncio.create_task(self._other_order())
                await asyncio.sleep(0.05)  # the task holds B now
            async with self.a:
                await asyncio.sleep(0.3)
                async with self.b:
                    pass
        await super().handle(event)


class Freeze(Echo):
    """After `hang_after` events a handler acquires a plain lock it already holds: the whole process stops
    (its event loop too), so health reports stop."""

    async def on_enable(self) -> None:
        self.hangs = _first_life(self.context.config)

    async def handle(self, event: StoredEvent) -> None:
        import threading

        if self.hangs and self.handled >= int(self.context.config.get("hang_after", 50)):
            lock = threading.Lock()
            lock.acquire()
            lock.acquire()  # never returns
        await super().handle(event)


class CrashAtStart(Echo):
    """Fails in `on_init`, every launch."""

    async def on_init(self, context: Any) -> None:
        raise RuntimeError("cannot start: the configuration names a device that does not exist")
