"""`context.every(interval, fn)`: the kernel runs a module's periodic work once per entitled tenant, inside
that tenant's context, follows live entitlement changes, stops it with the module, and survives a tick that
raises. In-process here (the host owns the tasks); isolated in test_sidecar.py (the runner owns them)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from edge.module_host.host import ModuleHost, ModuleState
from edge.outbox.sqlite import SqliteOutbox
from edge.sdk.modules import Health, ModuleContext
from edge.sdk.tenancy import TenantContext, current_tenant, tenant_scope
from tests.module_host.test_modules import _plugin

ACME = TenantContext("acme", entitlements=frozenset({"solar"}))
GLOBEX = TenantContext("globex")  # not entitled to the solar module
TICK = "org.example.tick"


class Ticking:
    """Publishes a tick event for the tenant it runs for; every second tick of a tenant then raises."""

    def __init__(self) -> None:
        self.ticks: Counter[str] = Counter()
        self.enabled = False

    async def on_init(self, context: ModuleContext) -> None:
        self.context = context
        context.every(0.05, self.tick)

    async def on_enable(self) -> None:
        self.enabled = True

    async def on_disable(self) -> None:
        self.enabled = False

    async def on_health_check(self) -> Health:
        return Health(True)

    async def tick(self, now: float) -> None:
        tenant = current_tenant().tenant_id
        self.ticks[tenant] += 1
        await self.context.publish(TICK, "gw", {"n": self.ticks[tenant], "enabled": self.enabled})
        if self.ticks[tenant] % 2 == 0:
            raise RuntimeError(f"tick {self.ticks[tenant]} failed")


async def _until(condition: object, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def _published(outbox: SqliteOutbox, tenant: TenantContext) -> list[int]:
    with tenant_scope(tenant):
        rows = await outbox.read_after(0, 10_000, [TICK])
    return [orjson.loads(r.body)["data"]["n"] for r in rows]


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[ModuleHost]:
    outbox = SqliteOutbox(tmp_path / "o.db", commit_interval=0.001)
    await outbox.open()
    host = ModuleHost(outbox, [ACME, GLOBEX], "gw", outbox.path.parent)
    try:
        yield host
    finally:  # a failed assertion must not leave ticks running into the next test
        await host.stop()
        await outbox.close()


async def test_ticks_run_per_entitled_tenant_follow_entitlements_and_stop_with_the_module(
    host: ModuleHost,
) -> None:
    outbox = host.outbox
    module = Ticking()
    hosted = await host.start("ticking", _plugin("ticking", lambda: module), {})
    assert hosted.state is ModuleState.ENABLED

    await _until(lambda: module.ticks["acme"] >= 7)
    assert module.ticks["globex"] == 0  # not entitled: no ticks
    assert hosted.handler_errors >= 3  # every second tick raised: logged, counted, and the ticks went on
    published = await _published(outbox, ACME)
    assert published[:6] == [1, 2, 3, 4, 5, 6]  # in acme's context (its outbox rows), while enabled
    assert await _published(outbox, GLOBEX) == []

    await host.tenants.set_entitlements("globex", {"solar"})  # entitled live: its ticks start
    await _until(lambda: module.ticks["globex"] >= 3)  # the third began: the second published
    assert (await _published(outbox, GLOBEX))[:2] == [1, 2]
    assert hosted.context is not None and {t.tenant_id for t in hosted.context.tenants} == {"acme", "globex"}

    await host.tenants.set_entitlements("acme", set())  # revoked live: its ticks stop at once
    revoked_at = module.ticks["acme"]
    await _until(lambda: module.ticks["globex"] >= 6)  # while globex ticks on
    assert module.ticks["acme"] == revoked_at

    await host.stop_module("ticking")  # disabled: no tick after on_disable
    stopped_at = sum(module.ticks.values())
    await asyncio.sleep(0.3)
    assert sum(module.ticks.values()) == stopped_at and not module.enabled
    assert hosted.ticks is not None and hosted.ticks.tenants == set()


async def test_a_module_disabled_and_enabled_again_ticks_again(host: ModuleHost) -> None:
    first, second = Ticking(), Ticking()
    await host.start("ticking", _plugin("ticking", lambda: first), {})
    await _until(lambda: first.ticks["acme"] >= 1)
    await host.stop_module("ticking")
    count = first.ticks["acme"]
    hosted = await host.start("ticking", _plugin("ticking", lambda: second), {})  # as an operator's enable
    await _until(lambda: second.ticks["acme"] >= 2)
    assert first.ticks["acme"] == count and hosted.state is ModuleState.ENABLED
