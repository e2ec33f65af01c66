"""Cloud sync through `kill -9`: the real gateway as its own process (Modbus simulator process, the session
Mosquitto, a cloud simulator on loopback), SIGKILLed mid-upload and restarted, loses nothing and breaks no
per-device order; and `edge sync flush` against a running gateway whose cloud was down and comes back."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import tomlkit

from simulators.cloud import CloudSimulator, Credentials
from tests.e2e import write_config
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port, until
from tests.reliability.harness import GatewayProcess

ROOT = Path(__file__).resolve().parents[2]
CONSUMER = "module:cloud_sync:uplink"
TENANTS = ("acme", "globex")
DEVICES = 4  # inv-01, inv-03 -> acme; inv-02, inv-04 -> globex

pytestmark = pytest.mark.timeout(90)


class RecordingCloud(CloudSimulator):
    """The cloud simulator, also keeping each stored event's content (to check that a resent id is identical)
    and counting uploads in progress (to check that the kills landed mid-upload)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.content: dict[tuple[str, str], dict[str, Any]] = {}
        self.content_conflicts = 0  # an id sent again with other content
        self.in_flight = 0

    async def _events(self, *args: Any, **kwargs: Any) -> Any:
        self.in_flight += 1
        try:
            return await super()._events(*args, **kwargs)
        finally:
            self.in_flight -= 1

    def _store(self, tenant: str, batch: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        for event in batch:
            first = self.content.setdefault((event["source"], event["id"]), event)
            if first != event:
                self.content_conflicts += 1
        return super()._store(tenant, batch)


@pytest.fixture
def modbus() -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(free_port(), DEVICES, ["--sim-time", "12:00"])
    sim.start()
    yield sim
    sim.stop()


def gateway_setup(
    tmp_path: Path,
    mosquitto: MosquittoProcess,
    modbus: SimulatorProcess,
    cloud: CloudSimulator,
    **options: Any,
) -> tuple[Path, dict[str, str]]:
    """A gateway config on real ports with cloud_sync to `cloud`: acme's client secret as an `env:` reference,
    globex's as a `file:` one, both HMAC keys in 0600 files; returns it and the child's environment."""
    prefix = f"kill{uuid.uuid4().hex[:8]}"
    config = write_config(
        tmp_path / "edge.toml",
        mqtt_port=mosquitto.port,
        modbus_port=modbus.port,
        devices=DEVICES,
        poll_interval=0.1,
        prefix=prefix,
    )
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    env = dict(os.environ)
    tenants: dict[str, Any] = {}
    for tenant in TENANTS:
        creds = cloud.clients[tenant]
        key_file = secrets_dir / f"{tenant}.hmac"
        key_file.write_bytes(creds.hmac_key + b"\n")
        key_file.chmod(0o600)
        if tenant == "acme":
            name = f"EDGE_KILL_TEST_{tenant.upper()}_SECRET"
            env[name] = creds.client_secret  # only in the gateway's environment
            secret = f"env:{name}"
        else:
            secret_file = secrets_dir / f"{tenant}.client"
            secret_file.write_text(creds.client_secret + "\n")
            secret_file.chmod(0o600)
            secret = f"file:{secret_file}"
        tenants[tenant] = {
            "endpoint": cloud.events_url,
            "token_url": cloud.token_url,
            "client_id": creds.client_id,
            "client_secret": secret,
            "hmac_key": f"file:{key_file}",
            "hmac_key_id": creds.key_id,
        }
    module = {
        "name": "cloud_sync",
        "config": {"backoff_base": 0.05, "backoff_cap": 0.4, "linger": 0.05, **options, "tenants": tenants},
    }
    with config.open("a") as fh:
        fh.write(tomlkit.dumps({"modules": [module]}))
    return config, env


def outbox_rows(config: Path) -> list[tuple[str, str, int, bytes]]:
    """(tenant, id, position, body) of every stored event, read-only (works while the gateway runs)."""
    path = config.parent / "data" / "outbox.db"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        return [
            (str(t), str(i), int(p), bytes(b))
            for t, i, p, b in db.execute("SELECT tenant, id, position, body FROM outbox ORDER BY position")
        ]
    finally:
        db.close()


def cloud_backlog(gateway: GatewayProcess) -> int | None:
    status = gateway.status()
    return None if status is None else int(status["module_backlogs"].get(CONSUMER, -1))


async def test_kill_9_mid_upload_loses_nothing_and_keeps_order(
    tmp_path: Path, mosquitto: MosquittoProcess, modbus: SimulatorProcess
) -> None:
    cloud = RecordingCloud([Credentials.demo(t) for t in TENANTS])
    async with cloud:
        # linger 0: a batch goes as soon as the previous one is acknowledged, so the backlog does reach 0
        # between readings (with a linger it would always hold the next readings)
        config, env = gateway_setup(tmp_path, mosquitto, modbus, cloud, batch_size=25, linger=0.0)
        cloud.faults.latency = 0.3  # every upload takes 0.3 s: a kill lands mid-upload
        gateway = GatewayProcess(config, env, tmp_path / "gateway.log")
        kills_mid_upload = 0
        try:
            for _ in range(3):
                gateway.start()
                await until(lambda: gateway.status() is not None, 15, "the gateway's first status")
                await asyncio.sleep(1.5)
                await until(lambda: cloud.in_flight > 0, 3, "an upload in flight")
                kills_mid_upload += cloud.in_flight > 0
                gateway.kill()
            assert kills_mid_upload == 3
            uploaded_before_drain = cloud.unique()
            assert uploaded_before_drain > 0

            cloud.faults.latency = 0.0
            gateway.start()
            await until(lambda: gateway.status() is not None, 15, "the gateway's status after the kills")
            await until(lambda: cloud.unique() > uploaded_before_drain, 10, "uploads after the last restart")
            await until(
                lambda: cloud_backlog(gateway) == 0,
                15,
                "status.json: cloud backlog 0",
                step=0.2,
                detail=lambda: (gateway.status(), cloud.stats()),
            )
            assert gateway.alive(), gateway.output()

            rows = outbox_rows(config)  # readings go on: what was stored up to now must all reach the cloud

            def all_at_cloud() -> bool:
                return all(
                    {i for t, i, _, _ in rows if t == tenant} <= {e[1] for e in cloud.received(tenant)}
                    for tenant in TENANTS
                )

            await until(all_at_cloud, 10, "every stored event at the cloud", step=0.2)
        finally:
            code = gateway.stop()
        assert code in (0, None), gateway.output()
        db = sqlite3.connect(f"file:{config.parent / 'data' / 'outbox.db'}?mode=ro", uri=True)
        try:  # after the clean stop too: everything the outbox counts as delivered is at the cloud
            cursors = dict(db.execute("SELECT tenant, position FROM cursors WHERE consumer = ?", (CONSUMER,)))
        finally:
            db.close()
        acked = outbox_rows(config)
        for tenant in TENANTS:
            done = {i for t, i, p, _ in acked if t == tenant and p <= cursors[tenant]}
            assert done <= {e[1] for e in cloud.received(tenant)}

    bodies = {i: orjson.loads(b) for _, i, _, b in rows}
    for tenant in TENANTS:
        stored = {i for t, i, _, _ in rows if t == tenant}
        at_cloud = cloud.received(tenant)
        ids = [e[1] for e in at_cloud]
        assert len(stored) > 100  # three kills and restarts' worth of readings
        assert stored <= set(ids), f"{tenant}: {len(stored - set(ids))} events lost"  # 0 lost
        assert len(ids) == len(set(ids))  # after dedupe by (source, id), each id once
        record = cloud.tenants[tenant]
        assert record.order_violations == 0 and record.gaps == 0, (
            tenant,
            record.order_violations,
            record.gaps,
        )
        for source, event_id, _, _ in at_cloud:
            sent = cloud.content[(source, event_id)]
            assert sent["tenantid"] == tenant  # only its own tenant's events at its tenant
            if event_id in bodies:
                assert sent == bodies[event_id]  # what the gateway stored, unchanged
        other = next(t for t in TENANTS if t != tenant)
        assert not stored & {e[1] for e in cloud.received(other)}
    assert cloud.cross_tenant == 0
    # uploads killed after the cloud stored them were sent again: duplicates, by id only, with the same content
    assert sum(r.duplicates for r in cloud.tenants.values()) > 0
    assert cloud.content_conflicts == 0
    assert cloud.key_conflicts == 0  # an idempotency key sent twice carried the same ids
    assert "client-secret" not in config.read_text() and "hmac-key" not in config.read_text()
    assert "client-secret" not in gateway.output() and "hmac-key" not in gateway.output()


async def run_cli(*args: str) -> tuple[int, str]:
    """`edge ...` as its own process (the test's loop keeps serving the cloud simulator meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge.cli",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_sync_flush_waits_for_the_backlog_of_a_cloud_that_comes_back(
    tmp_path: Path, mosquitto: MosquittoProcess, modbus: SimulatorProcess
) -> None:
    cloud = RecordingCloud([Credentials.demo(t) for t in TENANTS])
    async with cloud:
        config, env = gateway_setup(tmp_path, mosquitto, modbus, cloud, batch_size=50)
        await cloud.set_down(True)
        gateway = GatewayProcess(config, env, tmp_path / "gateway.log")
        gateway.start()
        try:
            await until(lambda: gateway.status() is not None, 15, "the gateway's first status")
            await until(lambda: (cloud_backlog(gateway) or 0) > 20, 10, "a backlog while the cloud is down")

            code, out = await run_cli("sync", "flush", "-c", str(config), "--timeout", "1.5")
            assert code == 1, out
            assert "timed out" in out and "not yet uploaded" in out
            for tenant in TENANTS:
                line = next(line for line in out.splitlines() if line.startswith(f"  {tenant}:"))
                assert "left (failing)" in line and "Connect" in line, out  # the last error, per tenant

            rows = outbox_rows(config)
            target = {t: max(p for tt, _, p, _ in rows if tt == t) for t in TENANTS}
            flushing = asyncio.create_task(run_cli("sync", "flush", "-c", str(config), "--timeout", "30"))
            await asyncio.sleep(2.2)
            assert not flushing.done()
            await cloud.set_down(False)
            code, out = await flushing
            assert code == 0, out
            assert "flushed:" in out, out
            progress = [line for line in out.splitlines() if line.startswith("[")]
            assert len(progress) >= 2 and all("acme" in p and "globex" in p for p in progress), out
            assert "failing: " in progress[0] and "0 left" in progress[-1], out  # per tenant, each second
            for tenant in TENANTS:  # everything stored before the flush started is at the cloud
                due = {i for t, i, p, _ in rows if t == tenant and p <= target[tenant]}
                assert due <= {e[1] for e in cloud.received(tenant)}
                record = cloud.tenants[tenant]
                assert record.order_violations == 0 and record.gaps == 0

            code, out = await run_cli("sync", "flush", "-c", str(config), "--tenant", "nobody")
            assert code == 2 and "no cloud uplink" in out
        finally:
            assert gateway.stop() in (0, None), gateway.output()
