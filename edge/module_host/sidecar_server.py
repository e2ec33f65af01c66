"""The kernel's side of module.proto: a gRPC server on a Unix socket for isolated modules and sidecars.

Each launch of an isolated process gets a fresh token (`expect`); every call must carry it, so a process
from an earlier launch, or anything else on the machine, cannot consume or publish in the module's name.
Routing is the in-process host's: the tenants entitled now (`ModuleHost.entitled`, re-read on every
entitlement change) and, in cluster mode on a shared outbox, led by this instance (`ModuleHost.runs_here`,
re-read on every change of leadership: deliveries, and through the tenants of each Health reply the module's
ticks, follow the leader), the module's durable outbox cursors, its `VersionGate`, and its kernel-side
`ModuleContext` for publishing (schema check and data version stamping).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import orjson

from edge.module_host.context import InProcessContext
from edge.module_host.host import HostedModule, ModuleHost, ModuleState
from edge.module_host.versions import VersionGate
from edge.outbox.consumer import DurableConsumer
from edge.plugins import LoadedPlugin, Manifest, parse_manifest
from edge.sdk.errors import DeviceError, OutboxFull, PluginError, UnknownTarget
from edge.sdk.events import StoredEvent
from edge.sdk.modules import Health, module_consumer
from edge.sdk.proto import TOKEN_HEADER
from edge.sdk.proto import module_pb2 as pb
from edge.sdk.proto import module_pb2_grpc as pb_grpc
from edge.sdk.store import ModuleStore, module_store_path
from edge.sdk.tenancy import TenantContext, tenant_scope

log = logging.getLogger(__name__)


HEALTH_INTERVAL = 2.0  # seconds between the Health calls a module is asked to make
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes


@dataclass(eq=False)  # one per module, compared and hashed by identity
class RemoteModule:
    """The kernel's view of one isolated module or sidecar, across its launches."""

    hosted: HostedModule
    config: dict[str, Any]
    installed: Manifest | None  # from the installed package; a sidecar's comes with Register
    data_dir: Path
    context: InProcessContext | None = None
    gate: VersionGate | None = None
    health: Health = field(default_factory=lambda: Health(False, "not registered"))
    health_at: float | None = None  # monotonic time of the last report of the current launch
    registered: int = 0
    consumers: set[str] = field(default_factory=set)  # its subscriptions' cursors, as seen so far
    tenants_changed: asyncio.Event = field(default_factory=asyncio.Event)
    errors_before: int = 0  # handler errors of earlier launches (each launch reports its own count)

    @property
    def name(self) -> str:
        return self.hosted.name

    def launched(self) -> None:
        self.health, self.health_at = Health(False, "starting"), None
        self.errors_before = self.hosted.handler_errors


class SidecarServer(pb_grpc.ModuleHostServicer):
    def __init__(self, host: ModuleHost, data_dir: Path) -> None:
        self._host = host
        self._data_dir = data_dir
        self._tokens: dict[str, RemoteModule] = {}
        self._remotes: dict[str, RemoteModule] = {}
        self._server: grpc.aio.Server | None = None
        self.socket = _socket_path(data_dir / "modules.sock")
        host.on_entitlements_changed(self._entitlements_changed)
        host.on_leadership_changed(self._leadership_changed)

    async def start(self) -> None:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # left by a gateway that was killed
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 << 20)])
        pb_grpc.add_ModuleHostServicer_to_server(self, server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"unix:{self.socket}")
        await server.start()
        os.chmod(self.socket, 0o600)  # only the gateway's user; each launch also needs its token
        self._server = server
        log.info("module sidecar API listening on %s", self.socket)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=1.0)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    def expect(self, token: str, remote: RemoteModule) -> None:
        """Admit calls with `token` (one launch of `remote`)."""
        self._tokens[token] = remote
        self._remotes[remote.name] = remote

    def forget(self, token: str) -> None:
        self._tokens.pop(token, None)

    def _entitlements_changed(self, old: TenantContext, new: TenantContext) -> None:
        outbox = self._host.outbox
        for remote in self._remotes.values():
            flag = remote.hosted.plugin.manifest.entitlement
            if new.entitled(flag) and not old.entitled(flag):
                with tenant_scope(new):  # from now on, not the tenant's history
                    for consumer in remote.consumers:
                        outbox.set_cursor(consumer, outbox.last_position)
            remote.tenants_changed.set()

    def _leadership_changed(self, tenant: str) -> None:
        for remote in self._remotes.values():
            remote.tenants_changed.set()  # its streams start or stop that tenant's feeders

    async def _caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> RemoteModule:
        token = dict(context.invocation_metadata() or ()).get(TOKEN_HEADER)
        remote = self._tokens.get(str(token)) if token else None
        if remote is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or expired launch token")
            raise AssertionError("abort raises")
        return remote

    async def _registered(self, context: grpc.aio.ServicerContext[Any, Any]) -> RemoteModule:
        remote = await self._caller(context)
        if remote.context is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"module {remote.name}: Register first")
        return remote

    def _tenants(self, remote: RemoteModule) -> list[TenantContext]:
        """The tenants the module may act for (publish, write): entitled now."""
        return self._host.entitled(remote.hosted.plugin.manifest.entitlement)

    def _served(self, remote: RemoteModule) -> list[TenantContext]:
        """The tenants whose events the module receives and ticks for here: entitled, and led here."""
        return [t for t in self._tenants(remote) if self._host.runs_here(t.tenant_id)]

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RegisterReply:
        remote = await self._caller(context)
        try:
            claimed = parse_manifest(tomllib.loads(request.manifest_toml), remote.name)
        except (PluginError, tomllib.TOMLDecodeError) as exc:
            log.error("module %s sent an invalid manifest: %s", remote.name, exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"manifest: {exc}")
        if claimed.name != remote.name or claimed.kind != "module":
            reason = f"manifest names {claimed.kind} {claimed.name!r}, launched as module {remote.name!r}"
            log.error("module %s refused: %s", remote.name, reason)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)
        manifest = remote.installed or claimed  # an installed package's own manifest wins over claims
        remote.hosted.plugin = LoadedPlugin(manifest, None)
        tenants = self._served(remote)
        remote.context = InProcessContext(
            remote.name,
            remote.config,
            self._tenants(remote),  # what it may publish and write for
            self._host.outbox,
            self._host.gateway_id,
            ModuleStore(
                module_store_path(self._data_dir, remote.name), remote.name
            ),  # the process opens its own
            point_writer=self._host.point_writer,  # the gateway's command path (None: no devices to write)
            produces=manifest.produces,
        )
        remote.gate = remote.gate or VersionGate(remote.name, manifest.consumes)
        remote.hosted.context, remote.hosted.gate = remote.context, remote.gate
        remote.hosted.state, remote.hosted.error = ModuleState.ENABLED, None
        remote.registered += 1
        remote.health, remote.health_at = Health(True, "registered"), time.monotonic()
        log.info(
            "module %s %s registered (isolated) for tenants %s",
            remote.name,
            manifest.version,
            [t.tenant_id for t in tenants],
        )
        return pb.RegisterReply(
            gateway_id=self._host.gateway_id,
            tenants=[_tenant(t) for t in tenants],
            config_json=orjson.dumps(remote.config).decode(),
            data_dir=str(remote.data_dir),
            health_interval=HEALTH_INTERVAL,
            store_path=str(module_store_path(self._data_dir, remote.name)),  # the in-process module's file
        )

    async def Health(
        self, request: pb.HealthReport, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.HealthReply:
        remote = await self._registered(context)
        remote.health, remote.health_at = Health(request.ok, request.detail[:500]), time.monotonic()
        remote.hosted.handler_errors = remote.errors_before + request.handler_errors
        return pb.HealthReply(tenants=[_tenant(t) for t in self._served(remote)])

    async def Publish(
        self, request: pb.PublishRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PublishReply:
        remote = await self._registered(context)
        assert remote.context is not None
        tenant = await self._entitled_tenant(remote, request.tenant, "publish", context)
        try:
            data = orjson.loads(request.data_json)
        except orjson.JSONDecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"data_json is not JSON: {exc}")
        if not isinstance(data, dict):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "data_json must be a JSON object")
        if not request.type:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "type is required")
        try:
            with tenant_scope(tenant):
                event_id = await remote.context.publish(request.type, request.subject, data)
        except OutboxFull as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except ValueError as exc:
            log.warning("module %s published an invalid event: %s", remote.name, exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.PublishReply(id=event_id)

    async def WritePoint(
        self, request: pb.WritePointRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.WritePointReply:
        remote = await self._registered(context)
        assert remote.context is not None
        tenant = await self._entitled_tenant(remote, request.tenant, "write", context)
        if not (request.site and request.device and request.point):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "site, device and point are required")
        try:
            value = orjson.loads(request.value_json)
        except orjson.JSONDecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"value_json is not JSON: {exc}")
        if value is not None and not isinstance(value, bool | int | float | str):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "value_json must be a number, boolean, string or null"
            )
        try:
            with tenant_scope(tenant):
                await remote.context.write_point(request.site, request.device, request.point, value)
        except UnknownTarget as exc:
            return pb.WritePointReply(ok=False, reason=str(exc), unknown_target=True)
        except DeviceError as exc:  # refused, unreachable, timed out: the command path logged and recorded it
            return pb.WritePointReply(ok=False, reason=exc.reason)
        except RuntimeError as exc:  # a host without devices (no command path)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return pb.WritePointReply(ok=True)

    async def _entitled_tenant(
        self, remote: RemoteModule, tenant_id: str, action: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> TenantContext:
        """The tenant a call acts for, if the module is entitled to it now; else the call is aborted."""
        tenant = next((t for t in self._tenants(remote) if t.tenant_id == tenant_id), None)
        if tenant is None:
            log.warning("module %s tried to %s for tenant %r: not entitled", remote.name, action, tenant_id)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"module {remote.name} is not entitled to {tenant_id!r}"
            )
            raise AssertionError("abort raises")
        return tenant

    async def Subscribe(
        self,
        request_iterator: AsyncIterator[pb.SubscribeRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.Delivery]:
        remote = await self._registered(context)
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("subscription"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "send a Subscription first")
            return
        sub = first.subscription
        if not sub.name or len(sub.name) > 64 or not 1 <= sub.max_batch <= 1000:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "subscription needs a name (<= 64) and max_batch 1..1000"
            )
            return
        stream = _Stream(self._host, remote, sub, self._served)
        async for delivery in stream.run(request_iterator):
            yield delivery


class _Stream:
    """One Subscribe call: a feeder per entitled tenant, one unacknowledged Delivery each."""

    def __init__(self, host: ModuleHost, remote: RemoteModule, sub: pb.Subscription, tenants: Any) -> None:
        self._host = host
        self._remote = remote
        self._types = tuple(sub.types)
        self._max = int(sub.max_batch)
        self._consumer = module_consumer(remote.name, sub.name)
        remote.consumers.add(self._consumer)
        self._tenants = tenants
        self._out: asyncio.Queue[pb.Delivery] = asyncio.Queue()
        self._acks: dict[str, asyncio.Future[pb.Ack]] = {}
        self._feeders: dict[str, asyncio.Task[None]] = {}

    async def run(self, requests: AsyncIterator[pb.SubscribeRequest]) -> AsyncIterator[pb.Delivery]:
        reader = asyncio.create_task(self._read_acks(requests))
        watcher = asyncio.create_task(self._follow_entitlements())
        getter: asyncio.Task[pb.Delivery] | None = None
        try:
            while not reader.done():
                getter = asyncio.create_task(self._out.get())
                await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    break
                yield getter.result()
        finally:
            # the stream may end while waiting (the server stopping): no task of it outlives it
            tasks = [reader, watcher, *self._feeders.values(), *([getter] if getter else [])]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _read_acks(self, requests: AsyncIterator[pb.SubscribeRequest]) -> None:
        async for request in requests:
            if not request.HasField("ack"):
                continue
            waiter = self._acks.get(request.ack.tenant)
            if waiter is not None and not waiter.done():
                waiter.set_result(request.ack)

    async def _follow_entitlements(self) -> None:
        """Start and stop tenants' feeders as entitlements change (checked on every change)."""
        while True:
            entitled = {t.tenant_id: t for t in self._tenants(self._remote)}
            for tenant_id in set(self._feeders) - set(entitled):
                self._feeders.pop(tenant_id).cancel()
                self._host.outbox.release(self._consumer, [tenant_id])
                log.info("module %s no longer receives tenant %s's events", self._remote.name, tenant_id)
            for tenant_id, tenant in entitled.items():
                if tenant_id not in self._feeders:
                    self._host.outbox.hold(self._consumer, [tenant_id])
                    self._feeders[tenant_id] = asyncio.create_task(self._feed(tenant))
            self._remote.tenants_changed.clear()
            await self._remote.tenants_changed.wait()

    async def _feed(self, tenant: TenantContext) -> None:
        events = DurableConsumer(
            self._host.outbox, tenant, self._consumer, types=self._types, max_batch=self._max
        )
        loop = asyncio.get_running_loop()
        with tenant_scope(tenant):
            async with events:
                async for batch in events:
                    await self._deliver(tenant, batch.events, loop)
                    events.ack(batch)

    async def _deliver(
        self, tenant: TenantContext, rows: list[StoredEvent], loop: asyncio.AbstractEventLoop
    ) -> None:
        remote, outbox = self._remote, self._host.outbox
        gate = remote.gate
        admitted = [e for e in (gate.admit(r) if gate else r for r in rows) if e is not None]
        if not admitted:
            return
        waiter: asyncio.Future[pb.Ack] = loop.create_future()
        self._acks[tenant.tenant_id] = waiter
        await self._out.put(pb.Delivery(tenant=tenant.tenant_id, events=[_event(e) for e in admitted]))
        ack = await waiter  # the stream's end cancels us: the cursor stays, the batch comes again
        by_position = {e.position: e for e in admitted}
        dead = [(by_position[p], why) for p, why in ack.rejected.items() if p in by_position]
        if dead:
            await outbox.dead_letter(self._consumer, dead)
            remote.hosted.dead_lettered += len(dead)
            log.warning("module %s refused %d events (first: %s)", remote.name, len(dead), dead[0][1])
        remote.hosted.handled += len(admitted) - len(dead)
        outbox.record_success(self._consumer, len(admitted) - len(dead))


def _event(row: StoredEvent) -> pb.Event:
    return pb.Event(
        position=row.position,
        id=row.id,
        type=row.type,
        subject=row.subject,
        device=row.device or "",
        sequence=row.sequence or 0,
        time=row.time,
        body=row.body,
    )


def _tenant(tenant: TenantContext) -> pb.Tenant:
    return pb.Tenant(id=tenant.tenant_id, locale=tenant.locale, entitlements=sorted(tenant.entitlements))


def _socket_path(preferred: Path) -> Path:
    """The socket in the data dir, or in a private temporary folder when that path is too long for AF_UNIX."""
    if len(str(preferred.resolve())) <= _MAX_SOCKET_PATH:
        return preferred
    return Path(tempfile.mkdtemp(prefix="edge-")) / "modules.sock"
