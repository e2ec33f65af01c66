"""Versioned events through the module host: adaptors across minors, refusal across majors, live entitlements."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge.module_host.host import ModuleHost
from edge.outbox.sqlite import SqliteOutbox
from edge.plugins import Consumes, LoadedPlugin, Manifest, parse_manifest
from edge.sdk.errors import PluginError
from edge.sdk.events import StoredEvent, make_event
from edge.sdk.modules import Health, ModuleContext
from edge.sdk.tenancy import TenantContext, tenant_scope
from edge.sdk.versions import ADAPTORS, AdaptorRegistry, deprecate_event_version, deprecated_api
from tests.helpers import until

METER = "org.example.meter.reading"
ACME = TenantContext("acme", entitlements=frozenset({"metering"}))
GLOBEX = TenantContext("globex")


@ADAPTORS.adaptor(METER, "1.1", "1.0")
def _meter_1_1_to_1_0(data: dict[str, Any]) -> dict[str, Any]:
    """1.1 split `kwh` into `import_kwh`/`export_kwh`; a 1.0 reader sees the net energy as `kwh`."""
    rest = {k: v for k, v in data.items() if k not in ("import_kwh", "export_kwh")}
    return {**rest, "kwh": data["import_kwh"] - data["export_kwh"]}


class Recorder:
    """Keeps what it was given: (tenant, dataversion, data)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    async def on_init(self, context: ModuleContext) -> None:
        context.subscribe([METER], self.handle)

    async def on_enable(self) -> None: ...
    async def on_disable(self) -> None: ...
    async def on_health_check(self) -> Health:
        return Health(True)

    async def handle(self, event: StoredEvent) -> None:
        body = orjson.loads(event.body)
        self.seen.append((event.tenant, body["dataversion"], body["data"]))


async def _meter(outbox: SqliteOutbox, tenant: TenantContext, version: str, data: dict[str, Any]) -> None:
    event = make_event(
        type=METER,
        source="/gw/meter",
        subject="m1",
        tenant=tenant.tenant_id,
        time=time.time(),
        data=data,
        dataversion=version,
    )
    with tenant_scope(tenant):
        await outbox.append_durable(event)


def _plugin(factory: Any, versions: str = ">=1.0,<1.1", entitlement: str | None = "metering") -> LoadedPlugin:
    manifest = Manifest(
        "meter", "module", "1.0.0", ">=1,<2", entitlement=entitlement, consumes=(Consumes(METER, versions),)
    )
    return LoadedPlugin(manifest, factory)


async def test_a_newer_minor_reaches_an_older_handler_through_an_adaptor_and_a_new_major_is_refused(
    tmp_path: Path,
) -> None:
    outbox = SqliteOutbox(tmp_path / "o.db")
    await outbox.open()
    host = ModuleHost(outbox, [ACME], "gw", outbox.path.parent)
    module = Recorder()
    hosted = await host.start("meter", _plugin(lambda: module), {})
    await _meter(outbox, ACME, "1.0", {"kwh": 5})
    await _meter(outbox, ACME, "1.1", {"import_kwh": 9, "export_kwh": 2})
    await _meter(outbox, ACME, "2.0", {"energy": {"kwh": 1}})
    await _meter(outbox, ACME, "1.0", {"kwh": 6})
    await until(lambda: len(module.seen) == 3, within=5.0)
    await asyncio.sleep(0.1)
    assert module.seen == [
        ("acme", "1.0", {"kwh": 5}),
        ("acme", "1.0", {"kwh": 7}),  # adapted from 1.1
        ("acme", "1.0", {"kwh": 6}),
    ]
    assert hosted.gate is not None
    assert hosted.gate.refused == {f"{METER}@2.0": 1} and hosted.gate.adapted == 1
    await host.stop()
    await outbox.close()


async def test_entitlement_changes_route_live(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outbox = SqliteOutbox(tmp_path / "o.db")
    await outbox.open()
    host = ModuleHost(outbox, [ACME, GLOBEX], "gw", outbox.path.parent)
    module = Recorder()
    await host.start("meter", _plugin(lambda: module, ">=1.0,<2"), {})
    await _meter(outbox, GLOBEX, "1.0", {"kwh": 1})  # before globex is entitled: never delivered
    await _meter(outbox, ACME, "1.0", {"kwh": 2})
    await until(lambda: len(module.seen) == 1, within=5.0)
    caplog.set_level("INFO")
    await host.tenants.set_entitlements("globex", {"metering"})
    await _meter(outbox, GLOBEX, "1.0", {"kwh": 3})
    await until(lambda: len(module.seen) == 2, within=5.0)
    assert module.seen[-1] == ("globex", "1.0", {"kwh": 3})
    assert "tenant globex entitlements changed: [] -> ['metering']" in caplog.text
    await host.tenants.set_entitlements("acme", set())
    await _meter(outbox, ACME, "1.0", {"kwh": 4})
    await _meter(outbox, GLOBEX, "1.0", {"kwh": 5})
    await until(lambda: len(module.seen) == 3, within=5.0)
    await asyncio.sleep(0.2)
    assert [t for t, _, _ in module.seen] == ["acme", "globex", "globex"]  # acme's 4 kWh stayed out
    with tenant_scope(ACME):
        assert "module:meter:0" not in outbox.holders()  # acme's rows no longer wait for the module
    await host.stop()
    await outbox.close()


def test_adaptors_never_cross_a_major_and_deprecations_give_two_minors() -> None:
    registry = AdaptorRegistry()
    with pytest.raises(ValueError, match="within one MAJOR"):
        registry.register(METER, "2.0", "1.9", lambda d: d)
    with pytest.raises(ValueError, match=r"removable in 1\.3 at the earliest"):
        deprecate_event_version(METER, "1.0", since="1.1", removed_in="1.2")
    with pytest.raises(ValueError, match="at the earliest"):
        deprecated_api(since="1.0", removed_in="1.1", instead="x")(lambda: None)

    @deprecated_api(since="8.0", removed_in="8.2", instead="new_call")  # far ahead: the registry is global
    def old_call() -> int:
        return 1

    with pytest.warns(DeprecationWarning, match="goes in 8.2; use new_call"):
        assert old_call() == 1


def test_manifest_checks_name_the_plugin_and_field() -> None:
    base = {"name": "solar", "kind": "module", "version": "1.0.0", "kernel_api": ">=1.0,<2"}
    manifest = parse_manifest(
        {
            **base,
            "run_mode": "isolated",
            "entitlement": "solar",
            "consumes": [{"type": "org.edgegw.telemetry", "versions": ">=1.0,<2"}],
            "produces": [{"type": "org.x.y", "version": "1.2", "schema": "m:Model"}],
        },
        "solar",
    )
    assert manifest.run_mode == "isolated" and manifest.consumes[0].versions == ">=1.0,<2"
    assert manifest.produces[0].version == "1.2"
    for bad, reason in [
        ({"version": "1.0"}, "not SemVer"),
        ({"run_mode": "thread"}, "run_mode 'thread'"),
        ({"consumes": [{"type": "t", "versions": "one"}]}, "not a version range"),
        ({"produces": [{"type": "t", "version": "1"}]}, "not MAJOR.MINOR"),
    ]:
        with pytest.raises(PluginError, match=reason) as info:
            parse_manifest({**base, **bad}, "solar")
        assert info.value.plugin == "solar"


def test_nothing_deprecated_outlives_its_removal_version() -> None:
    from packaging.version import Version

    from edge.plugins import KERNEL_API_VERSION
    from edge.sdk.versions import DEPRECATED_API

    overdue = [d for d in DEPRECATED_API.values() if Version(d.removed_in) <= Version(KERNEL_API_VERSION)]
    assert overdue == [], "remove these from the module API (their window has passed)"
