"""The gateway with a sidecar that is not written on the Python SDK: `edge module` and `edge tenant`
against the running gateway (live entitlements, disable and enable), and after it stopped."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner, Result

from edge.cli import app
from edge.gateway import Gateway
from edge.sdk.errors import ConfigError
from edge.sdk.events import TELEMETRY, make_event
from edge.sdk.tenancy import tenant_scope
from tests.e2e import load
from tests.helpers import until

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "tests" / "sidecar_modules"
ECHO = "org.example.raw.seen"


def _config(path: Path, mqtt_port: int) -> Path:
    command = [sys.executable, str(ROOT / "examples" / "sidecar" / "raw_sidecar.py")]  # stubs only, no SDK
    path.write_text(
        f"""
[gateway]
id = "gw-mod"
data_dir = "data"
[bus]
mode = "external"
port = {mqtt_port}
[storage]
commit_interval_ms = 2
[[tenants]]
id = "acme"
entitlements = ["raw"]  # the sidecar's flag
[[tenants]]
id = "globex"
[[sites]]
id = "roof"
[[modules]]
name = "raw"
command = {json.dumps(command)}
env = {{ PYTHONPATH = "{ROOT}", EDGE_LOG_LEVEL = "WARNING" }}
"""
    )
    return path


async def _cli(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env={"COLUMNS": "200"})


async def _telemetry(gateway: Gateway, tenant: str, sequence: int) -> None:
    event = make_event(
        type=TELEMETRY,
        source="/gw-mod/test",
        subject="roof/inv",
        tenant=tenant,
        time=time.time(),
        data={"device": "inv", "site": "roof", "points": {}},
        device="inv",
        sequence=sequence,
    )
    with tenant_scope(gateway.tenants[tenant]):
        await gateway.outbox.append_durable(event)


async def _echoed(gateway: Gateway, tenant: str) -> list[int]:
    with tenant_scope(gateway.tenants[tenant]):
        rows = await gateway.outbox.read_after(0, 10_000, [ECHO])
    return sorted({orjson.loads(r.body)["data"]["sequence"] for r in rows})


async def test_operators_manage_a_sidecar_and_entitlements_live_and_see_a_stopped_gateway(
    tmp_path: Path, mosquitto: Any
) -> None:
    config = _config(tmp_path / "edge.toml", mosquitto.port)
    gateway = Gateway(*load(config))
    await gateway.start()
    c = str(config)
    try:

        async def healthy() -> bool:
            return (await _cli("module", "health", "-c", c)).exit_code == 0

        await until(healthy, within=15.0)
        for sequence in (1, 2):
            await _telemetry(gateway, "acme", sequence)
            await _telemetry(gateway, "globex", sequence)

        async def acme_echoed() -> bool:
            return await _echoed(gateway, "acme") == [1, 2]

        await until(acme_echoed, within=15.0)
        assert await _echoed(gateway, "globex") == []  # not entitled

        result = await _cli("tenant", "entitle", "globex", "raw", "-c", c)
        assert result.exit_code == 0, result.output
        assert "tenant 'globex' entitlements: raw" in result.output

        async def globex_routed() -> bool:
            return (
                "globex" in (await asyncio.to_thread(gateway.module_control.state.snapshots))["raw"].tenants
            )

        await until(globex_routed, within=5.0)  # no restart: the gateway follows its config file
        await _telemetry(gateway, "globex", 3)

        async def globex_echoed() -> bool:
            return await _echoed(gateway, "globex") == [3]  # from the change on, not its history

        await until(globex_echoed, within=15.0)

        result = await _cli("module", "disable", "raw", "-c", c)
        assert result.exit_code == 0 and "disabled in the running gateway" in result.output, result.output
        await _telemetry(gateway, "acme", 3)  # while it is disabled
        await asyncio.sleep(0.5)
        assert await _echoed(gateway, "acme") == [1, 2]
        result = await _cli("module", "health", "raw", "-c", c)
        assert result.exit_code == 0 and "disabled" in result.output
        result = await _cli("module", "enable", "raw", "-c", c)
        assert result.exit_code == 0, result.output

        async def resumed() -> bool:
            return await _echoed(gateway, "acme") == [1, 2, 3]

        await until(resumed, within=15.0)  # what came while it was disabled, from its durable cursor
        await gateway.set_entitlements("globex", [])  # the kernel's entry point (for the REST API)
        assert gateway.tenants["globex"].entitlements == frozenset()
        assert gateway.modules.tenants is gateway.tenants  # one record of entitlements, shared
        await _telemetry(gateway, "globex", 4)
        await asyncio.sleep(0.5)
        assert await _echoed(gateway, "globex") == [3]  # revoked at once
        with pytest.raises(KeyError, match="initech"):
            await gateway.set_entitlements("initech", ["raw"])
        listing = await _cli("module", "list", "-c", c)
        assert listing.exit_code == 0 and "raw" in listing.output and "isolated" in listing.output
    finally:
        await gateway.stop()
    down = await _cli("module", "health", "-c", c)
    assert down.exit_code == 4 and "the gateway is not running: it stopped" in down.output
    result = await _cli("module", "disable", "raw", "-c", c)
    assert result.exit_code == 0 and "not running: it applies this when it starts" in result.output
    unknown = await _cli("module", "enable", "solar", "-c", c)
    assert unknown.exit_code == 1 and "no module 'solar'" in unknown.output


def test_module_config_errors_name_file_field_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    head = (
        '[gateway]\nid = "gw"\n[[tenants]]\nid = "acme"\n[[sites]]\nid = "roof"\n[[modules]]\nname = "raw"\n'
    )
    for body, where, reason in [
        (
            'command = ["node", "sidecar.js"]\nrun_mode = "in_process"\n',
            "modules[0]",
            "runs isolated, not in_process",
        ),
        (
            '[modules.limits]\nmemory = "1KiB"\n',
            "modules[0] (raw).limits.memory",
            "greater than or equal to 16777216",
        ),
    ]:
        path.write_text(head + body)
        with pytest.raises(ConfigError) as info:
            load(path)
        issues = [str(issue) for issue in info.value.issues]
        assert any(i.startswith(f"{path}: {where}") and reason in i for i in issues), issues
