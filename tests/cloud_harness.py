"""Building blocks of the cloud sync tests: a real outbox, the cloud_sync module hosted by the kernel, and
cloud simulators on loopback ports; secrets passed as real `env:` and `file:` references."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_sync import CloudSync
from edge.module_host.host import HostedModule, ModuleHost
from edge.outbox.sqlite import SqliteOutbox
from edge.plugins import LoadedPlugin, read_manifest
from edge.sdk.events import TELEMETRY, Event, make_event
from edge.sdk.tenancy import TenantContext, tenant_scope
from simulators.cloud import CloudSimulator, Credentials

CONSUMER = "module:cloud_sync:uplink"
FAST = {"backoff_base": 0.05, "backoff_cap": 0.4, "linger": 0.05}  # keep outage tests short


def telemetry(tenant: str, device: str, sequence: int, points: int = 4) -> Event:
    return make_event(
        type=TELEMETRY,
        source=f"/gw/modbus/{device}",
        subject=f"roof/{device}",
        tenant=tenant,
        time=time.time(),
        data={
            "device": device,
            "site": "roof",
            "points": {
                f"p{i}": {"value": sequence + i, "unit": "W", "quality": "good"} for i in range(points)
            },
        },
        device=device,
        sequence=sequence,
    )


async def ingest(
    outbox: SqliteOutbox, tenant: TenantContext, devices: Sequence[str], per_device: int, start: int = 1
) -> list[Event]:
    """Append `per_device` events for each device, interleaved; returns them once committed."""
    events = []
    with tenant_scope(tenant):
        for seq in range(start, start + per_device):
            for device in devices:
                event = telemetry(tenant.tenant_id, device, seq)
                events.append(event)
                await outbox.append(event)
        last = telemetry(
            tenant.tenant_id, f"flush-{devices[0]}-{start}", 1
        )  # durable: all before it committed
        events.append(last)
        await outbox.append_durable(last)
    return events


def sync_config(sims: dict[str, CloudSimulator], secrets_dir: Path, **options: Any) -> dict[str, Any]:
    """cloud_sync config for these tenants, each on its simulator, secrets as env: and file: references."""
    tenants = {}
    for tenant, sim in sims.items():
        creds = sim.clients[tenant]
        env = f"EDGE_TEST_SECRET_{tenant.upper()}"
        os.environ[env] = creds.client_secret
        key_file = secrets_dir / f"{tenant}.hmac"
        key_file.write_bytes(creds.hmac_key + b"\n")
        key_file.chmod(0o600)
        tenants[tenant] = {
            "endpoint": sim.events_url,
            "token_url": sim.token_url,
            "client_id": creds.client_id,
            "client_secret": f"env:{env}",
            "hmac_key": f"file:{key_file}",
            "hmac_key_id": creds.key_id,
        }
    for tenant, extra in options.pop("per_tenant", {}).items():
        tenants[tenant].update(extra)
    return {**FAST, **options, "tenants": tenants}


@dataclass
class Sync:
    host: ModuleHost
    hosted: HostedModule

    @property
    def module(self) -> CloudSync:
        assert isinstance(self.hosted.module, CloudSync)
        return self.hosted.module

    async def stop(self) -> None:
        await self.host.stop()


async def start_sync(outbox: SqliteOutbox, tenants: Sequence[TenantContext], config: dict[str, Any]) -> Sync:
    host = ModuleHost(outbox, list(tenants), "gw-test", outbox.path.parent)
    plugin = LoadedPlugin(read_manifest("cloud_sync"), CloudSync)
    hosted = await host.start("cloud_sync", plugin, config)
    assert hosted.error is None, hosted.error
    return Sync(host, hosted)


def simulator(*tenants: str, **options: Any) -> CloudSimulator:
    return CloudSimulator([Credentials.demo(t) for t in tenants], **options)


def in_order(sim: CloudSimulator, tenant: str) -> bool:
    """After dedupe, every device's sequences arrive strictly increasing and without gaps."""
    record = sim.tenants[tenant]
    return record.order_violations == 0 and record.gaps == 0
