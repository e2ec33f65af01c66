"""Module hosting: lifecycle, entitlement routing, durable resumption, and failure isolation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson

from edge.module_host.context import InProcessContext
from edge.module_host.host import ModuleHost, ModuleState
from edge.outbox.sqlite import SqliteOutbox
from edge.plugins import LoadedPlugin, Manifest, Produces
from edge.sdk.events import TELEMETRY, StoredEvent, make_event
from edge.sdk.modules import Health, ModuleContext
from edge.sdk.store import ModuleStore
from edge.sdk.tenancy import TenantContext, tenant_scope
from tests.helpers import until

ACME = TenantContext("acme", entitlements=frozenset({"solar"}))
GLOBEX = TenantContext("globex")  # not entitled to the solar module


class PeakPower:
    """A small real module: tracks each tenant's peak AC power and publishes a new-peak event."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.enabled = False

    async def on_init(self, context: ModuleContext) -> None:
        self.context = context
        self.peak: dict[str, float] = {}
        context.subscribe([TELEMETRY], self.handle)

    async def on_enable(self) -> None:
        self.enabled = True

    async def on_disable(self) -> None:
        self.enabled = False

    async def on_health_check(self) -> Health:
        return Health(self.enabled, f"{len(self.seen)} events")

    async def handle(self, event: StoredEvent) -> None:
        self.seen.append((event.tenant, event.sequence or 0))
        power = orjson.loads(event.body)["data"]["points"]["ac_power"]["value"]
        if power > self.peak.get(event.tenant, 0):
            self.peak[event.tenant] = power
            await self.context.publish("org.example.solar.peak", "roof/inv", {"ac_power": power})


class CrashesOnInit:
    async def on_init(self, context: ModuleContext) -> None:
        raise RuntimeError("bad configuration value")

    async def on_enable(self) -> None: ...
    async def on_disable(self) -> None: ...
    async def on_health_check(self) -> Health:
        return Health(True)


def _plugin(name: str, factory: object, entitlement: str | None = "solar") -> LoadedPlugin:
    return LoadedPlugin(Manifest(name, "module", "1.0.0", ">=1,<2", entitlement=entitlement), factory)


async def _telemetry(outbox: SqliteOutbox, tenant: TenantContext, sequence: int, power: float) -> None:
    event = make_event(
        type=TELEMETRY,
        source="/gw/modbus/inv",
        subject="roof/inv",
        tenant=tenant.tenant_id,
        time=time.time(),
        data={
            "device": "inv",
            "site": "roof",
            "points": {"ac_power": {"value": power, "unit": "W", "quality": "good"}},
        },
        device="inv",
        sequence=sequence,
    )
    with tenant_scope(tenant):
        await outbox.append_durable(event)


async def test_only_entitled_tenants_events_reach_a_module_and_a_crashing_module_stays_contained(
    tmp_path: Path,
) -> None:
    outbox = SqliteOutbox(tmp_path / "o.db")
    await outbox.open()
    host = ModuleHost(outbox, [ACME, GLOBEX], "gw", outbox.path.parent)
    module = PeakPower()
    broken = await host.start("broken", _plugin("broken", CrashesOnInit), {})
    hosted = await host.start("peak", _plugin("peak", lambda: module), {})
    assert broken.state is ModuleState.FAILED and "bad configuration value" in (broken.error or "")
    assert hosted.state is ModuleState.ENABLED
    for seq, power in enumerate([100.0, 300.0, 200.0], start=1):
        await _telemetry(outbox, ACME, seq, power)
        await _telemetry(outbox, GLOBEX, seq, power * 10)
    await until(lambda: len(module.seen) == 3, within=5.0)
    await asyncio.sleep(0.2)
    assert module.seen == [("acme", 1), ("acme", 2), ("acme", 3)]  # nothing of globex's
    health = await host.health()
    assert health["peak"].ok and not health["broken"].ok
    await host.stop()
    assert not module.enabled
    with tenant_scope(ACME):
        peaks = await outbox.read_after(0, 100, ["org.example.solar.peak"])
    assert [orjson.loads(p.body)["data"]["ac_power"] for p in peaks] == [100.0, 300.0]
    with tenant_scope(GLOBEX):
        assert await outbox.read_after(0, 100, ["org.example.solar.peak"]) == []
    await outbox.close()


async def test_a_restarted_module_resumes_where_it_stopped(tmp_path: Path) -> None:
    outbox = SqliteOutbox(tmp_path / "o.db")
    await outbox.open()
    first = PeakPower()
    host = ModuleHost(outbox, [ACME], "gw", outbox.path.parent)
    await host.start("peak", _plugin("peak", lambda: first), {})
    for seq in (1, 2):
        await _telemetry(outbox, ACME, seq, 10.0 * seq)
    await until(lambda: len(first.seen) == 2, within=5.0)
    await asyncio.sleep(0.1)  # let the handler finish: a stop mid-handler offers that event again
    await host.stop()
    for seq in (3, 4):  # while the module is down
        await _telemetry(outbox, ACME, seq, 10.0 * seq)
    await outbox.close()

    outbox = SqliteOutbox(tmp_path / "o.db")
    await outbox.open()
    second = PeakPower()
    host = ModuleHost(outbox, [ACME], "gw", outbox.path.parent)
    await host.start("peak", _plugin("peak", lambda: second), {})
    await until(lambda: len(second.seen) == 2, within=5.0)
    assert second.seen == [("acme", 3), ("acme", 4)]  # no repeats, no gap
    await host.stop()
    await outbox.close()


async def test_a_module_publishing_a_declared_type_is_checked_against_its_schema_and_stamped(
    tmp_path: Path,
) -> None:
    outbox = SqliteOutbox(tmp_path / "o.db", commit_interval=0.001)
    await outbox.open()
    declared = Produces("org.example.alert", "1.2", "edge.sdk.events:AssetFailedData")
    store = ModuleStore(tmp_path / "alerts.sqlite", "alerts")
    context = InProcessContext("alerts", {}, [ACME], outbox, "gw", store, produces=(declared,))
    alert = {
        "state": "raised",
        "alert_id": "alerts:stuck:roof:lift-1",
        "site": "roof",
        "asset": "lift-1",
        "kind": "stuck",
        "severity": "major",
        "cause": "between floors 3 and 4",
        "since": "2026-11-25T10:00:00Z",
    }
    try:
        with tenant_scope(ACME):
            try:
                await context.publish("org.example.alert", "roof/lift-1", {**alert, "severity": "huge"})
            except ValueError as exc:
                assert "module alerts" in str(exc) and "org.example.alert" in str(exc)
            else:
                raise AssertionError("data outside the declared schema was published")
            event_id = await context.publish("org.example.alert", "roof/lift-1", alert)
            for _ in range(100):  # bounded: the commit lands within a few ms
                rows = await outbox.read_after(0, 10)
                if rows:
                    break
                await asyncio.sleep(0.01)
        assert [r.id for r in rows] == [event_id]  # the refused one never reached the outbox
        assert orjson.loads(rows[0].body)["dataversion"] == "1.2"
    finally:
        await outbox.close()
