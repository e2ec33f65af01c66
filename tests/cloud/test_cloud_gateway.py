"""The whole path to the cloud: Modbus simulator -> gateway (real Mosquitto) -> outbox -> cloud_sync -> cloud
simulator, through an uplink outage; then `edge sync status` and the retention settings of the config file."""

from __future__ import annotations

import asyncio
import sqlite3
import tomllib
from pathlib import Path

import orjson
import pytest
import tomlkit
from typer.testing import CliRunner

from cloud_sync.cli import app as sync_app
from edge.config.models import GatewayConfig
from edge.gateway import Gateway
from edge.outbox import RetentionPolicy
from tests.cloud_harness import CONSUMER, simulator, sync_config
from tests.e2e import load, write_config
from tests.helpers import MosquittoProcess, SimulatorProcess, until

DEVICES = 4

pytestmark = pytest.mark.timeout(60)


def _telemetry_at_cloud(cloud: object, tenant: str) -> list[tuple[str, str, int | None, str]]:
    return [e for e in cloud.received(tenant) if e[3] == "org.edgegw.telemetry"]  # type: ignore[attr-defined]


async def test_gateway_uploads_every_tenants_events_through_an_outage_and_reports_status(
    tmp_path: Path, mosquitto: MosquittoProcess, modbus: SimulatorProcess
) -> None:
    async with simulator("acme", "globex") as cloud:
        path = write_config(
            tmp_path / "edge.toml", mqtt_port=mosquitto.port, modbus_port=modbus.port, devices=DEVICES
        )
        module = {"name": "cloud_sync", "config": sync_config({"acme": cloud, "globex": cloud}, tmp_path)}
        with path.open("a") as fh:
            fh.write(tomlkit.dumps({"modules": [module]}))
        loaded, registry = load(path)
        gateway = Gateway(loaded, registry)
        await gateway.start()
        try:
            await until(
                lambda: all(len(_telemetry_at_cloud(cloud, t)) >= 6 for t in ("acme", "globex")), within=20.0
            )
            await cloud.set_down(True)
            before = cloud.unique()
            await asyncio.sleep(1.5)  # the devices keep being polled; the outbox holds their events
            assert cloud.unique() == before
            await cloud.set_down(False)
            await until(lambda: cloud.unique() > before + 20, within=20.0)
            await asyncio.sleep(0.5)
        finally:
            await gateway.stop()

        with sqlite3.connect(gateway.outbox.path) as db:
            cursors = dict(db.execute("SELECT tenant, position FROM cursors WHERE consumer = ?", (CONSUMER,)))
            rows = db.execute("SELECT tenant, id, position FROM outbox ORDER BY position").fetchall()
        for tenant in ("acme", "globex"):
            sent = {e[1] for e in cloud.received(tenant)}
            acked = [i for t, i, p in rows if t == tenant and p <= cursors[tenant]]
            assert acked and set(acked) <= sent  # everything acknowledged is at the cloud: nothing lost
            record = cloud.tenants[tenant]
            assert record.order_violations == 0 and record.gaps == 0  # per device, through the outage
        assert cloud.cross_tenant == 0
        assert {r.client for r in cloud.requests if r.status == 200} == {"acme", "globex"}

        result = CliRunner().invoke(sync_app, ["status", "-c", str(path), "--json"])
        assert result.exit_code == 0, result.output
        status = {row["tenant"]: row for row in map(orjson.loads, result.output.splitlines())}
        for tenant in ("acme", "globex"):
            row = status[tenant]
            assert row["consumer"] == CONSUMER and row["dead_letters"] == 0
            assert row["last_success_age_s"] < 30 and row["delivered"] >= 6
            assert row["last_error"] and "Connect" in row["last_error"]  # the outage was recorded
        table = CliRunner().invoke(sync_app, ["status", "-c", str(path)])
        assert "acme" in table.output and CONSUMER in table.output and "last success" in table.output
        replay = CliRunner().invoke(sync_app, ["replay-dead-letters", "-c", str(path), "--tenant", "acme"])
        assert replay.exit_code == 0 and "0 dead letters" in replay.output


async def test_gateway_restarts_mid_backlog_lose_nothing(
    tmp_path: Path, mosquitto: MosquittoProcess, modbus: SimulatorProcess
) -> None:
    async with simulator("acme", "globex") as cloud:
        path = write_config(
            tmp_path / "edge.toml", mqtt_port=mosquitto.port, modbus_port=modbus.port, devices=DEVICES
        )
        config = sync_config({"acme": cloud, "globex": cloud}, tmp_path, batch_size=20)
        with path.open("a") as fh:
            fh.write(tomlkit.dumps({"modules": [{"name": "cloud_sync", "config": config}]}))
        await cloud.set_down(True)
        loaded, registry = load(path)
        gateway = Gateway(loaded, registry)
        await gateway.start()
        await asyncio.sleep(2.0)  # a backlog builds up while the cloud is away
        await gateway.stop()
        await cloud.set_down(False)
        cloud.faults.latency = 0.1  # slow uploads: the next stop lands mid-backlog
        for _ in range(2):
            gateway = Gateway(*load(path))
            await gateway.start()
            await until(lambda: cloud.unique() > 0, within=20.0)
            await asyncio.sleep(0.3)
            await gateway.stop()
        cloud.faults.latency = 0.0
        gateway = Gateway(*load(path))
        await gateway.start()
        try:
            await asyncio.sleep(1.0)
        finally:
            await gateway.stop()
        with sqlite3.connect(gateway.outbox.path) as db:
            stored = db.execute("SELECT tenant, id FROM outbox").fetchall()
            backlog = dict(
                db.execute(
                    "SELECT c.tenant, COUNT(o.position) FROM cursors c LEFT JOIN outbox o"
                    " ON o.tenant = c.tenant AND o.position > c.position WHERE c.consumer = ? GROUP BY c.tenant",
                    (CONSUMER,),
                )
            )
    for tenant in ("acme", "globex"):
        at_cloud = {e[1] for e in cloud.received(tenant)}
        ids = {i for t, i in stored if t == tenant}
        assert len(ids - at_cloud) == backlog[tenant] < 60  # only what was stored in the last moments waits
        record = cloud.tenants[tenant]
        assert record.order_violations == 0 and record.gaps == 0
    assert cloud.key_conflicts == 0  # whatever was sent twice, was sent with the same ids under the same key


def test_retention_is_configured_per_tenant_over_storage_defaults() -> None:
    raw = tomllib.loads(
        """
        [gateway]
        id = "gw"
        [storage.retention]
        max_age = "2h"
        max_bytes = "512MiB"
        [[tenants]]
        id = "acme"
        retention = { max_bytes = "2GiB", policy = "refuse_newest" }
        [[tenants]]
        id = "globex"
        [[sites]]
        id = "roof"
        """
    )
    config = GatewayConfig.model_validate(raw)
    assert config.retention_policy("acme") == RetentionPolicy(
        max_age=7200, max_bytes=2 << 30, policy="refuse_newest", keep_delivered=600
    )
    assert config.retention_policy("globex") == RetentionPolicy(max_age=7200, max_bytes=512 << 20)
    with pytest.raises(ValueError, match="units"):
        GatewayConfig.model_validate({**raw, "storage": {"retention": {"max_age": "2 fortnights"}}})
