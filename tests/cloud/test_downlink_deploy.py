"""Configuration deployments and the entitlement service from the cloud simulator, against a real gateway:
a device added live, a deployment refused by validation, one rolled back because its device stays down, a
gateway killed mid-deployment, and an entitlement revoked while events flow. Messages are signed by the test
with pyjwt (independently of the gateway)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from typer.testing import CliRunner

from edge.cli import app as edge_app
from edge.gateway import Gateway
from edge.sdk.modules import module_consumer
from simulators.cloud import CloudSimulator
from tests.cloud_harness import simulator
from tests.downlink_harness import add_cloud, claims, result_of, send
from tests.e2e import load, write_config
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port, until

pytestmark = pytest.mark.timeout(120)
COMMENT = "# the operator's note: kept through deployments"


def _config(
    tmp_path: Path,
    mosquitto: MosquittoProcess,
    modbus: SimulatorProcess,
    cloud: CloudSimulator,
    **cloud_settings: Any,
) -> Path:
    path = write_config(tmp_path / "edge.toml", mqtt_port=mosquitto.port, modbus_port=modbus.port, devices=2)
    path.write_text(f"{COMMENT}\n{path.read_text()}")
    return add_cloud(path, cloud, ("acme", "globex"), **cloud_settings)


async def _spawn(command: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy()
    )


def _device(name: str, port: int, unit: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "driver": "modbus",
        "site": "roof",
        "profile": "sunspec-inverter",
        "poll_interval": 0.3,
        "timeout": 0.3,
        "connection": {"host": "127.0.0.1", "port": port, "unit_id": unit},
    }


def _deploy(cloud: CloudSimulator, tenant: str, version: str, patch: dict[str, Any]) -> str:
    return send(
        cloud,
        tenant,
        cloud.platform.tenants[tenant].key,
        claims(tenant, "deployment", version=version, patch=patch),
    )


async def test_deployments_add_devices_live_refuse_invalid_ones_and_roll_back_unhealthy_ones(
    tmp_path: Path, mosquitto: MosquittoProcess, modbus: SimulatorProcess
) -> None:
    async with simulator("acme", "globex") as cloud:
        path = _config(tmp_path, mosquitto, modbus, cloud)
        gateway = Gateway(*load(path))
        await gateway.start()
        try:
            added = _deploy(
                cloud, "acme", "v2", {"devices": {"upsert": [_device("inv-new", modbus.port, 3)]}}
            )
            result = await result_of(cloud, "acme", added)
            assert result["status"] == "done" and result["target"] == "v2", result
            assert result["detail"]["added"] == ["inv-new"]
            assert ("acme", "roof", "inv-new") in gateway.pollers and gateway.stats.devices["inv-new"].up
            text = path.read_text()
            assert COMMENT in text and 'name = "inv-new"' in text  # the file is the truth, comments kept

            invalid = _deploy(
                cloud,
                "acme",
                "v3",
                {"devices": {"upsert": [{**_device("inv-bad", modbus.port), "profile": "no-such"}]}},
            )
            refused = await result_of(cloud, "acme", invalid)
            assert refused["status"] == "refused" and "validation failed" in refused["reason"]
            assert "no-such" in refused["reason"] and path.read_text() == text

            foreign = _deploy(cloud, "acme", "v4", {"devices": {"remove": ["inv-02"]}})  # globex's device
            assert "belongs to tenant 'globex'" in (await result_of(cloud, "acme", foreign))["reason"]

            dead = free_port()
            unhealthy = _deploy(cloud, "acme", "v5", {"devices": {"upsert": [_device("inv-away", dead)]}})
            rolled = await result_of(cloud, "acme", unhealthy)
            assert rolled["status"] == "rolled_back" and "inv-away" in rolled["reason"], rolled
            assert "not healthy within 4 s" in rolled["reason"]
            assert path.read_text() == text and ("acme", "roof", "inv-away") not in gateway.pollers

            removed = _deploy(cloud, "acme", "v6", {"devices": {"remove": ["inv-new"]}})
            assert (await result_of(cloud, "acme", removed))["detail"]["removed"] == ["inv-new"]
            assert ("acme", "roof", "inv-new") not in gateway.pollers
        finally:
            await gateway.stop()

        history = CliRunner().invoke(edge_app, ["config", "history", "-c", str(path)])
        assert history.exit_code == 0, history.output
        assert "rolled_back" in history.output and "v5" in history.output and "applied" in history.output
        first = history.output.strip().splitlines()[-1].split()[0]  # the oldest: the file at start
        back = CliRunner().invoke(edge_app, ["config", "rollback", first, "-c", str(path)])
        assert back.exit_code == 0, back.output
        assert "inv-new" not in path.read_text() and COMMENT in path.read_text()


async def test_a_gateway_killed_mid_deployment_comes_back_on_the_configuration_before_it(
    tmp_path: Path, mosquitto: MosquittoProcess, modbus: SimulatorProcess
) -> None:
    async with simulator("acme", "globex") as cloud:
        path = _config(tmp_path, mosquitto, modbus, cloud, deploy_timeout=60.0)
        before = path.read_text()
        command = [sys.executable, "-m", "edge.cli", "run", "-c", str(path)]
        first = await _spawn(command)
        try:
            await until(lambda: cloud.platform.tenants["acme"].polls > 0, within=30.0)
            jti = _deploy(cloud, "acme", "v9", {"devices": {"upsert": [_device("inv-away", free_port())]}})
            await until(lambda: "inv-away" in path.read_text(), within=20.0)  # applied, waiting for health
            first.send_signal(signal.SIGKILL)
            await asyncio.wait_for(first.wait(), 10)
        finally:
            if first.returncode is None:
                first.kill()
        second = await _spawn(command)
        try:
            result = await result_of(cloud, "acme", jti, within=40.0)
            assert result["status"] == "rolled_back" and "mid-deployment" in result["reason"]
            assert path.read_text() == before  # consistent: the last good configuration, whole
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.wait(), 30)


async def test_an_entitlement_revoked_while_events_flow_stops_routing_to_the_module_for_that_tenant(
    tmp_path: Path, mosquitto: MosquittoProcess, modbus: SimulatorProcess
) -> None:
    async with simulator("acme", "globex") as cloud:
        path = _config(tmp_path, mosquitto, modbus, cloud)
        document = tomlkit.parse(path.read_text())
        document["modules"].append({"name": "solar", "config": {"interval": 60}})
        path.write_text(tomlkit.dumps(document))
        for tenant in ("acme", "globex"):
            cloud.platform.set_entitlements(tenant, ["solar"])
        gateway = Gateway(*load(path))
        await gateway.start()
        consumer = module_consumer("solar", "telemetry")
        outbox = gateway.outbox.path

        def position(tenant: str) -> int:
            with sqlite3.connect(outbox) as db:
                row = db.execute(
                    "SELECT position FROM cursors WHERE consumer = ? AND tenant = ?", (consumer, tenant)
                ).fetchone()
            return int(row[0]) if row else 0

        def stored(tenant: str) -> int:
            with sqlite3.connect(outbox) as db:
                return int(
                    db.execute("SELECT MAX(position) FROM outbox WHERE tenant = ?", (tenant,)).fetchone()[0]
                    or 0
                )

        try:
            await until(lambda: position("globex") > 0 and position("acme") > 0, within=20.0)
            revoke = cloud.platform.set_entitlements("globex", [], push="gw-test")
            assert revoke is not None
            assert (await result_of(cloud, "globex", revoke))["detail"] == {"entitlements": []}
            assert "solar" not in gateway.tenants["globex"].entitlements
            await asyncio.sleep(0.5)  # a batch in flight when it changed may still land
            routed, newest = position("globex"), stored("globex")
            await asyncio.sleep(2.0)
            assert stored("globex") > newest  # globex's events keep flowing into the outbox ...
            assert position("globex") == routed  # ... and none more reach the module for globex
            acme = position("acme")
            await until(lambda: position("acme") > acme, within=10.0)  # acme still gets its events

            status = CliRunner().invoke(edge_app, ["status", "-c", str(path)])
            assert "entitlements of globex from its platform: none" in status.output, status.output
        finally:
            await gateway.stop()


async def test_offline_the_last_entitlement_answer_holds_until_the_configured_max_age(
    tmp_path: Path, mosquitto: MosquittoProcess, modbus: SimulatorProcess
) -> None:
    async with simulator("acme", "globex") as cloud:
        path = _config(tmp_path, mosquitto, modbus, cloud, entitlement_max_age=3.0)
        cloud.platform.set_entitlements("globex", ["solar", "billing"])
        gateway = Gateway(*load(path))
        await gateway.start()
        try:
            await until(lambda: "billing" in gateway.tenants["globex"].entitlements, within=10.0)
        finally:
            await gateway.stop()
        await cloud.set_down(True)
        gateway = Gateway(*load(path))  # the platform is away: the persisted answer applies at start
        await gateway.start()
        try:
            assert gateway.tenants["globex"].entitlements == {"solar", "billing"}
            await until(lambda: not gateway.tenants["globex"].entitlements, within=10.0)  # past max age
            await cloud.set_down(False)
            await until(lambda: "billing" in gateway.tenants["globex"].entitlements, within=15.0)
        finally:
            await gateway.stop()
