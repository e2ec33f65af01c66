"""The gateway's status: one snapshot of its counters and backlogs, and the status file it is written to.

`GatewayStatus` computes the snapshot from the parts that count (stats, outbox, bus); `edge run` writes it with
the health report to `status_file(data_dir)` every `STATUS_INTERVAL` seconds (`write_status_file`), where `edge status`,
`edge sync status` and the benchmarks read it, and the REST API serves it at `/v1/status`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Collection, Mapping, Set, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson

from edge.bus.base import BusStats
from edge.bus.publisher import MQTT_CONSUMER
from edge.ops.stats import GatewayStats
from edge.outbox import RetentionPolicy
from edge.sdk.tenancy import TenantContext, tenant_scope

__all__ = [
    "STATUS_INTERVAL",
    "DownlinkStatus",
    "GatewayStatus",
    "StatusSnapshot",
    "gateway_running",
    "status_file",
    "write_status_file",
]


# Seconds between two rewrites of the status file (and of `edge run --status`'s line). Each rewrite is a rename
# over the old file, which ext4 makes start writing the new file's data out at once: twice as often cost the
# gateway 7 % of its CPU at 1 s polls (docs/performance.md), and wears a gateway's flash for nothing.
STATUS_INTERVAL = 2.0


def status_file(data_dir: Path) -> Path:
    """The status file of the gateway using `data_dir`: rewritten every `STATUS_INTERVAL` s while it runs."""
    return data_dir / "status.json"


def gateway_running(data_dir: Path, stale_after: float = 10.0) -> bool:
    """Whether a gateway runs on `data_dir`: its status file was rewritten lately and its process exists."""
    try:
        body = orjson.loads(status_file(data_dir).read_bytes())
        written, pid = float(body["time"]), int(body["pid"])
    except (OSError, ValueError, TypeError, KeyError):
        return False
    if time.time() - written > stale_after or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs as the service's account
        return True
    return True


def write_status_file(path: Path, body: dict[str, Any]) -> None:
    """Replace the status file atomically (write, fsync-free rename): readers never see half a file."""
    body = {"pid": os.getpid(), "time": time.time(), **body}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(body))
    tmp.replace(path)


@dataclass(frozen=True)
class DownlinkStatus:
    """One tenant's downlink to its platform (edge.downlink), as `/v1/status`, the status file and `edge status`
    show it. Times are Unix seconds."""

    state: Literal["starting", "connected", "retrying"]
    since: float | None  # when the link entered this state
    last_error: str | None  # why the last attempt failed (kept after it came back)
    failures: int
    last_message: str | None  # id (jti) of the last message the platform sent, acted on or refused
    last_message_at: float | None
    entitlements: (
        list[str] | None
    )  # the platform's last entitlement answer; None: the file decides, or none yet
    entitlements_age: float | None  # seconds since that answer arrived
    entitlements_lapsed: bool  # older than entitlement_max_age: the tenant's entitlements lapsed


@dataclass(frozen=True)
class StatusSnapshot:
    uptime: float
    devices: int
    devices_up: int
    points_read: int
    events_stored: int
    events_published: int
    point_updates_published: int
    backlog: int
    module_backlogs: dict[str, int]
    bus_connected: bool
    commands_accepted: int
    commands_rejected: int
    inbound_oversize_rejected: int
    task_restarts: int
    # tenant -> limit -> its counter (edge.ops.quotas), "storage": the outbox quota's use and policy
    limits: dict[str, dict[str, dict[str, Any]]]
    downlink: dict[str, DownlinkStatus]  # per tenant with a [tenants.cloud]


@dataclass(frozen=True)
class TenantOutbox:
    tenant: str
    events: int
    bytes: int
    backlogs: dict[str, int]  # consumer -> events it has not yet taken


class _Backlogs(Protocol):
    """The outbox as the status reads it (backlogs are scoped to the current tenant)."""

    @property
    def committed_events(self) -> int: ...
    async def backlog(self, consumer: str) -> int: ...
    def usage(self) -> tuple[int, int]: ...
    def holders(self) -> Set[str]: ...
    def policy(self) -> RetentionPolicy: ...


class _Bus(Protocol):
    @property
    def connected(self) -> bool: ...
    @property
    def stats(self) -> BusStats: ...


class GatewayStatus:
    """Counters and backlogs of a running gateway; `tenants` and `devices` (the polled ones) are live views."""

    def __init__(
        self,
        stats: GatewayStats,
        outbox: _Backlogs,
        bus: _Bus,
        tenants: Collection[TenantContext],
        devices: Sized,
        downlink: Callable[[], Mapping[str, DownlinkStatus]] = dict,
    ) -> None:
        self._stats = stats
        self._outbox = outbox
        self._bus = bus
        self._tenants = tenants
        self._devices = devices
        self._downlink = downlink

    async def backlog(self) -> int:
        """Events the MQTT publisher has not yet published, all tenants together."""
        total = 0
        for ctx in self._tenants:
            with tenant_scope(ctx):
                total += await self._outbox.backlog(MQTT_CONSUMER)
        return total

    async def module_backlogs(self) -> dict[str, int]:
        """Events not yet taken by each module consumer (cloud uploads among them), all tenants together."""
        totals: dict[str, int] = {}
        for ctx in self._tenants:
            with tenant_scope(ctx):
                for consumer in sorted(self._outbox.holders() - {MQTT_CONSUMER}):
                    totals[consumer] = totals.get(consumer, 0) + await self._outbox.backlog(consumer)
        return totals

    def limits(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per tenant: each limit's counter, and the outbox bytes it holds against its storage quota."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for ctx in self._tenants:
            tenant = ctx.tenant_id
            # counters hold only scalars: a shallow copy (asdict deep-copies every value, every time)
            own = {name: dict(vars(c)) for name, c in self._stats.quotas.get(tenant, {}).items()}
            with tenant_scope(ctx):
                _, used = self._outbox.usage()
                policy = self._outbox.policy()
            own["storage"] = {"limit": policy.max_bytes, "policy": policy.policy, "used": used}
            out[tenant] = own
        return out

    async def tenant_outboxes(self) -> list[TenantOutbox]:
        """Per tenant: its events and bytes in the outbox, and each consumer's backlog (MQTT, modules, cloud,
        webhooks)."""
        out = []
        for ctx in self._tenants:
            with tenant_scope(ctx):
                events, size = self._outbox.usage()
                backlogs = {c: await self._outbox.backlog(c) for c in sorted(self._outbox.holders())}
            out.append(TenantOutbox(ctx.tenant_id, events, size, backlogs))
        return out

    async def published(self) -> None:
        """Return once the MQTT publisher has caught up, or the bus is down (bound it with a timeout)."""
        while self._bus.connected and await self.backlog() > 0:  # noqa: ASYNC110 (bounded by the caller)
            await asyncio.sleep(0.05)

    async def snapshot(self) -> StatusSnapshot:
        stats = self._stats
        return StatusSnapshot(
            uptime=time.monotonic() - stats.started,
            devices=len(self._devices),
            devices_up=stats.devices_up,
            points_read=stats.points_read,
            events_stored=self._outbox.committed_events,
            events_published=stats.events_published,
            point_updates_published=stats.point_updates_published,
            backlog=await self.backlog(),
            module_backlogs=await self.module_backlogs(),
            bus_connected=self._bus.connected,
            commands_accepted=stats.commands_accepted,
            commands_rejected=stats.commands_rejected,
            inbound_oversize_rejected=self._bus.stats.inbound_rejected_oversize,
            task_restarts=sum(stats.task_restarts.values()),
            limits=self.limits(),
            downlink=dict(self._downlink()),
        )
