"""What the API uses of the running gateway: the narrow services edge.gateway builds and hands over.

The API never sees the gateway itself; each route reaches only the service it needs. Services that exist only
once the gateway started (the write path, the webhook store) are read through a function that returns None
before that, so the API answers 503 instead of failing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from edge.bus.base import BusStats
from edge.config import LoadedConfig
from edge.devices.commands import WriteOutcome, WriteRequest
from edge.module_host.host import HostedModule
from edge.ops.stats import GatewayStats
from edge.ops.status import DownlinkStatus, StatusSnapshot, TenantOutbox
from edge.outbox import CommitListener, DeviceHistory
from edge.outbox.inspect import OutboxInspector
from edge.plugins import PluginRegistry
from edge.sdk.modules import Health
from edge.sdk.tenancy import TenantContext
from edge.webhooks import WebhookStore

__all__ = [
    "ApiServices",
    "BusLink",
    "EventHistory",
    "HostedModules",
    "PointWrites",
    "SupervisedModule",
    "TenantLimits",
]


class EventHistory(DeviceHistory, Protocol):
    """The outbox as the API reads it: commits as they happen, a device's stored events, its status (sync)."""

    def add_commit_listener(self, listener: CommitListener) -> None: ...
    def inspector(self, *, writable: bool = False) -> OutboxInspector: ...


class PointWrites(Protocol):
    """The command path a REST write takes (edge.devices.commands.CommandHandler)."""

    async def write(self, request: WriteRequest) -> WriteOutcome: ...


class HostedModules(Protocol):
    """The modules the gateway hosts, with their lifecycle state and health (edge.module_host.host)."""

    @property
    def modules(self) -> Mapping[str, HostedModule]: ...
    async def health(self) -> Mapping[str, Health]: ...


class SupervisedModule(Protocol):
    """An isolated module's or sidecar's supervisor as /metrics reads it (edge.module_host.supervisor)."""

    @property
    def restarts(self) -> int: ...
    @property
    def circuit_open(self) -> bool: ...


class ModuleCommandSubmit(Protocol):
    async def __call__(
        self,
        tenant: str,
        module: str,
        action: str,
        args: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> str: ...


class BusLink(Protocol):
    @property
    def connected(self) -> bool: ...
    @property
    def inflight(self) -> int: ...
    @property
    def inflight_limit(self) -> int: ...
    @property
    def stats(self) -> BusStats: ...


class TenantLimits(Protocol):
    """Each tenant's request rate and live stream count (edge.ops.quotas.Quotas)."""

    def api_request(self, tenant: str) -> float | None: ...  # None: go on; else seconds for Retry-After
    def ws_client(self, tenant: str, open_now: int) -> str | None: ...  # None: go on; else the reason


@dataclass(frozen=True)
class ApiServices:
    loaded: LoadedConfig  # devices, tenants' names, the file entitlement changes are written to
    tenants: Mapping[str, TenantContext]  # the live contexts (entitlements change while running)
    outbox: EventHistory
    stats: GatewayStats
    polled: Collection[tuple[str, str, str]]  # (tenant, site, device) of every enabled device
    bus: BusLink
    modules: HostedModules
    status: Callable[[], Awaitable[StatusSnapshot]]
    outboxes: Callable[[], Awaitable[list[TenantOutbox]]]  # per tenant: size and each consumer's backlog
    set_entitlements: Callable[[str, Iterable[str]], Awaitable[None]]  # live; the file is the API's part
    submit_module_command: ModuleCommandSubmit  # Gateway.submit_module_command
    registry: PluginRegistry  # drivers, for discovery
    start_new_devices: Callable[[LoadedConfig], Awaitable[list[str]]]  # after the file gained devices
    commands: Callable[[], PointWrites | None]  # None until the gateway started
    webhooks: Callable[[], WebhookStore | None]  # None until the gateway started
    supervisors: Callable[[], Mapping[str, SupervisedModule]] = dict  # isolated modules, by name
    downlink: Callable[[], Mapping[str, DownlinkStatus]] = dict  # each tenant's link to its platform
    limits: TenantLimits | None = None  # per-tenant limits; None: unlimited (tests of single routes)
