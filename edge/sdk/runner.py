"""The SDK runner: an isolated Python module in its own process, with the same ModuleContext API over gRPC.

    python -m edge.sdk.runner <module>                        # an installed module (entry point)
    python -m edge.sdk.runner <module> --factory pkg.mod:Cls --manifest path/manifest.toml

The kernel launches it (see edge.module_host.supervisor) with EDGE_SIDECAR_SOCKET and EDGE_SIDECAR_TOKEN set.
The module's hooks and handlers run exactly as in-process: `subscribe` handlers one event at a time (an
exception is logged and counted, the event acknowledged), `subscribe_batches` handlers with the same
Rejected / RetryLater outcomes. A delivery is acknowledged only after its handler returned, so a process
killed mid-batch gets that batch again from its durable cursor. The process exits when the kernel goes away
(its socket closes) or on SIGTERM (after `on_disable`).

A handler call that does not return within EDGE_HANDLER_TIMEOUT seconds (the module's `limits.handler_timeout`,
set by the kernel; waits between RetryLater attempts do not count) is deadlocked as far as anyone can tell: the
runner then stops reporting health, so the kernel's health timeout ends the process and restarts it, and the
unacknowledged batch comes again. The process's event loop may still be fine, which is why a health check
alone cannot see it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import orjson
import tomlkit

from edge.plugins import PluginRegistry
from edge.sdk.backoff import Backoff
from edge.sdk.errors import DeviceError, UnknownTarget
from edge.sdk.events import StoredEvent
from edge.sdk.modules import (
    RETRY_BASE,
    RETRY_CAP,
    BatchHandler,
    EventHandler,
    Module,
    Rejected,
    RetryLater,
    TickHandler,
    module_consumer,
)
from edge.sdk.proto import TOKEN_HEADER
from edge.sdk.proto import module_pb2 as pb
from edge.sdk.proto import module_pb2_grpc as pb_grpc
from edge.sdk.store import ModuleStore, StateStore
from edge.sdk.tenancy import TenantContext, current_tenant, tenant_scope
from edge.sdk.ticks import TenantTicks, Tick

__all__ = ["IsolatedContext", "main", "run"]

log = logging.getLogger("edge.sdk.runner")

# seconds a WritePoint call may take: the kernel's own write timeout (edge.devices.commands, 10 s) plus its bookkeeping
_WRITE_DEADLINE = 15.0
DEFAULT_HANDLER_TIMEOUT = 60.0  # seconds one handler call may take when the kernel does not say


class _Calls:
    """Handler calls in progress, per subscription, with their start (monotonic): the stall watchdog's view."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    @contextlib.contextmanager
    def running(self, subscription: str) -> Iterator[None]:
        self._started[subscription] = time.monotonic()
        try:
            yield
        finally:
            del self._started[subscription]

    def stalled(self, timeout: float) -> tuple[str, float] | None:
        """(subscription, seconds) of the oldest call running longer than `timeout`, else None."""
        if not self._started:
            return None
        name, started = min(self._started.items(), key=lambda item: item[1])
        age = time.monotonic() - started
        return (name, age) if age > timeout else None


@dataclass
class _Registered:
    """What the module asked for through its context: the runner streams and ticks from it."""

    subscriptions: list[tuple[str, tuple[str, ...], EventHandler]] = field(default_factory=list)
    batch_subscriptions: list[tuple[str, tuple[str, ...], BatchHandler, int]] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)


class IsolatedContext:
    """The `edge.sdk.ModuleContext` of an isolated module: the same calls, carried over gRPC to the kernel."""

    def __init__(
        self,
        name: str,
        reply: pb.RegisterReply,
        stub: pb_grpc.ModuleHostStub,
        token: str,
        registered: _Registered | None = None,
    ) -> None:
        self.name = name
        self.config: dict[str, Any] = orjson.loads(reply.config_json or "{}")
        self.gateway_id = reply.gateway_id
        self.log = logging.getLogger(f"edge.module.{name}")
        self.tenants = _tenants(reply.tenants)
        # the module's own tenant-scoped store: the same SQLite file as in-process (WAL: readers such as
        # `edge billing report` are fine), wherever the kernel keeps it
        self.store: StateStore = ModuleStore(Path(reply.store_path), name)
        self._registered = registered or _Registered()
        self._stub = stub
        self._metadata = ((TOKEN_HEADER, token),)

    def subscribe(self, types: Sequence[str], handler: EventHandler) -> None:
        """Receive committed events of these types, per entitled tenant, in outbox order, at least once."""
        subscriptions = self._registered.subscriptions
        # named by index, as in-process: switching run mode keeps the module's cursor
        subscriptions.append((str(len(subscriptions)), tuple(types), handler))

    def subscribe_batches(
        self,
        types: Sequence[str] | None,
        handler: BatchHandler,
        *,
        max_batch: int = 1000,
        max_wait: float = 0.5,
        max_bytes: int | None = None,
        name: str = "batches",
        tenants: Sequence[str] | None = None,
    ) -> None:
        """Receive committed events in batches of one tenant, as in-process (the kernel batches them)."""
        if max_batch < 1 or max_wait < 0:
            raise ValueError("max_batch must be >= 1 and max_wait >= 0")
        self._registered.batch_subscriptions.append((name, tuple(types or ()), handler, min(max_batch, 1000)))

    def consumer_name(self, subscription: str) -> str:
        """The outbox consumer (cursor) name of one of this module's batch subscriptions."""
        return module_consumer(self.name, subscription)

    def every(self, interval: float, fn: TickHandler) -> None:
        """Call `fn(now)` every `interval` seconds per entitled tenant, inside its context, while the module
        runs; this process owns the tasks and follows entitlement changes at each health report."""
        self._registered.ticks.append(Tick(interval, fn))

    async def publish(self, type: str, subject: str, data: dict[str, Any]) -> str:
        """Publish for the current tenant; durable in the kernel's outbox when this returns."""
        request = pb.PublishRequest(
            tenant=current_tenant().tenant_id, type=type, subject=subject, data_json=orjson.dumps(data)
        )
        try:
            reply = await self._stub.Publish(request, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.INVALID_ARGUMENT:
                raise ValueError(exc.details()) from None
            raise
        return str(reply.id)

    async def write_point(self, site: str, device: str, point: str, value: Any) -> None:
        """Write a point of the current tenant's device through the kernel's command path, as in-process:
        raises UnknownTarget or DeviceError with the reason when the write is refused or fails."""
        request = pb.WritePointRequest(
            tenant=current_tenant().tenant_id,
            site=site,
            device=device,
            point=point,
            value_json=orjson.dumps(value).decode(),
        )
        try:
            reply = await self._stub.WritePoint(request, metadata=self._metadata, timeout=_WRITE_DEADLINE)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.INVALID_ARGUMENT:
                raise ValueError(exc.details()) from None
            if exc.code() is grpc.StatusCode.PERMISSION_DENIED:  # entitlement revoked meanwhile
                raise DeviceError(device, str(exc.details()), point) from None
            if exc.code() is grpc.StatusCode.FAILED_PRECONDITION:
                raise RuntimeError(exc.details()) from None
            raise
        if reply.unknown_target:
            raise UnknownTarget(reply.reason)
        if not reply.ok:
            raise DeviceError(device, reply.reason or "write failed", point)


def _tenants(tenants: Sequence[pb.Tenant]) -> tuple[TenantContext, ...]:
    return tuple(TenantContext(t.id, t.locale or "en", frozenset(t.entitlements)) for t in tenants)


def _stored(tenant: str, event: pb.Event) -> StoredEvent:
    return StoredEvent(
        event.position,
        event.id,
        tenant,
        event.type,
        event.subject,
        event.device or None,
        event.sequence or None,
        event.time,
        event.body,
    )


async def _stream(
    context: IsolatedContext,
    name: str,
    types: tuple[str, ...],
    max_batch: int,
    handle: Callable[[list[StoredEvent]], Any],
) -> None:
    """One subscription: take each Delivery, hand it to the module, acknowledge what it settled."""
    call = context._stub.Subscribe(metadata=context._metadata)
    await call.write(
        pb.SubscribeRequest(subscription=pb.Subscription(name=name, types=types, max_batch=max_batch))
    )
    tenants = {t.tenant_id: t for t in context.tenants}
    while True:
        delivery = await call.read()
        if delivery is grpc.aio.EOF:
            raise ConnectionError("the kernel ended the subscription")
        tenant = tenants.get(delivery.tenant) or TenantContext(delivery.tenant)
        tenants.setdefault(delivery.tenant, tenant)
        batch = [_stored(delivery.tenant, e) for e in delivery.events]
        with tenant_scope(tenant):
            rejected: dict[int, str] = await handle(batch)
        ack = pb.Ack(tenant=delivery.tenant, position=batch[-1].position, rejected=rejected)
        await call.write(pb.SubscribeRequest(ack=ack))


def _one_by_one(
    handler: EventHandler, counters: dict[str, int], calls: _Calls, name: str
) -> Callable[[list[StoredEvent]], Any]:
    async def handle(batch: list[StoredEvent]) -> dict[int, str]:
        for event in batch:
            try:
                with calls.running(name):
                    await handler(event)
                counters["handled"] += 1
            except Exception as exc:  # as in-process: logged and counted, not offered forever
                counters["errors"] += 1
                log.error("failed on event %s: %s", event.id, exc)
        return {}

    return handle


def _batches(
    handler: BatchHandler, counters: dict[str, int], calls: _Calls, name: str
) -> Callable[[list[StoredEvent]], Any]:
    backoff = Backoff(RETRY_BASE, RETRY_CAP)

    async def handle(batch: list[StoredEvent]) -> dict[int, str]:
        while True:  # as in-process: nothing is acknowledged until the handler settles the batch
            try:
                with calls.running(name):  # the waits between attempts are not the handler's
                    outcome = await handler(batch)
            except RetryLater as retry:
                await asyncio.sleep(retry.after if retry.after is not None else backoff.next_delay())
                continue
            except Exception:
                counters["errors"] += 1
                log.exception("failed on a batch of %d events; retrying", len(batch))
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            rejected = dict(outcome.reasons) if isinstance(outcome, Rejected) else {}
            counters["handled"] += len(batch) - len(rejected)
            return rejected

    return handle


async def _report_health(
    context: IsolatedContext,
    module: Module,
    interval: float,
    ticks: TenantTicks,
    counters: dict[str, int],
    watchdog: tuple[_Calls, float],
) -> None:
    calls, handler_timeout = watchdog
    while True:
        stalled = calls.stalled(handler_timeout)
        if stalled is not None:  # a deadlocked handler: fall silent, the kernel's health timeout ends us
            log.error(
                "module %s: a handler of subscription %s has not returned for %.0f s (limit %.0f s); "
                "no more health reports, so the kernel restarts this process",
                context.name,
                stalled[0],
                stalled[1],
                handler_timeout,
            )
            await (
                asyncio.Event().wait()
            )  # silent from now on (returning would end the process as a clean exit)
        try:
            health = await asyncio.wait_for(module.on_health_check(), max(interval, 1.0))
            ok, detail = health.ok, health.detail
        except Exception as exc:
            ok, detail = False, f"health check failed: {exc}"
        report = pb.HealthReport(ok=ok, detail=detail, handler_errors=counters["errors"])
        reply = await context._stub.Health(report, metadata=context._metadata)
        context.tenants = _tenants(reply.tenants)
        await ticks.follow(context.tenants)  # entitled or revoked since the last report
        await asyncio.sleep(interval)


async def run(name: str, factory: Callable[[], Any], manifest_toml: str) -> int:
    socket, token = os.environ["EDGE_SIDECAR_SOCKET"], os.environ["EDGE_SIDECAR_TOKEN"]
    async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
        stub = pb_grpc.ModuleHostStub(channel)  # type: ignore[no-untyped-call]
        reply = await stub.Register(
            pb.RegisterRequest(manifest_toml=manifest_toml), metadata=((TOKEN_HEADER, token),)
        )
        registered = _Registered()
        context = IsolatedContext(name, reply, stub, token, registered)
        module = factory()
        if not isinstance(module, Module):
            log.error("module %s does not implement on_init/on_enable/on_disable/on_health_check", name)
            return 2
        await context.store.open()
        try:
            await module.on_init(context)
            await module.on_enable()
        except Exception as exc:  # a crash at start: exit at once (the store's thread would keep us alive)
            log.error("module %s failed to start: %s", name, exc, exc_info=exc)
            await context.store.close()
            return 1
        counters = {"handled": 0, "errors": 0}

        def count_error() -> None:
            counters["errors"] += 1

        ticks = TenantTicks(name, registered.ticks, count_error)
        await ticks.follow(context.tenants)
        interval = reply.health_interval or 2.0
        calls = _Calls()
        watchdog = (calls, float(os.environ.get("EDGE_HANDLER_TIMEOUT", DEFAULT_HANDLER_TIMEOUT)))
        tasks = [asyncio.create_task(_report_health(context, module, interval, ticks, counters, watchdog))]
        for sub_name, types, handler in registered.subscriptions:
            one_by_one = _one_by_one(handler, counters, calls, sub_name)
            tasks.append(asyncio.create_task(_stream(context, sub_name, types, 200, one_by_one)))
        for sub_name, types, batch_handler, max_batch in registered.batch_subscriptions:
            batches = _batches(batch_handler, counters, calls, sub_name)
            tasks.append(asyncio.create_task(_stream(context, sub_name, types, max_batch, batches)))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in [*tasks, stopper]:
            task.cancel()
        await ticks.close()
        with contextlib.suppress(Exception):
            await module.on_disable()
        await context.store.close()
        failed = [t for t in done if t is not stopper and not t.cancelled() and t.exception() is not None]
        if failed:
            log.error("module %s stops: %s", name, failed[0].exception())
            return 1
        return 0


def _load(name: str, factory: str | None, manifest: Path | None) -> tuple[Callable[[], Any], str]:
    """The module's factory and the manifest text it registers with."""
    if factory is not None:
        module_name, _, attribute = factory.partition(":")
        source = importlib.import_module(module_name)
        path = manifest or Path(str(source.__file__)).parent / "manifest.toml"
        return getattr(source, attribute), path.read_text(encoding="utf-8")
    registry = PluginRegistry.from_entry_points()
    plugin = registry.module(name)
    if plugin is None:
        raise SystemExit(
            f"module {name!r} is not installed ({registry.failures.get(name, 'no entry point')})"
        )
    m = plugin.manifest  # the kernel checks it against the installed package's own manifest
    text = tomlkit.dumps({"name": m.name, "kind": m.kind, "version": m.version, "kernel_api": m.kernel_api})
    return plugin.obj, text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.sdk.runner", description=__doc__.split("\n")[0])
    parser.add_argument("module", help="the module's name (its entry point in edge.modules)")
    parser.add_argument("--factory", help="package.module:Class of a module that is not installed")
    parser.add_argument("--manifest", type=Path, help="its manifest.toml (default: beside --factory)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("EDGE_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s %(levelname)-7s [module {args.module} pid {os.getpid()}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    factory, manifest_toml = _load(args.module, args.factory, args.manifest)
    started = time.monotonic()
    try:
        return asyncio.run(run(args.module, factory, manifest_toml))
    except grpc.aio.AioRpcError as exc:
        log.error(
            "module %s: the kernel refused or went away: %s %s", args.module, exc.code().name, exc.details()
        )
        return 3
    finally:
        log.info("module %s ran %.1f s", args.module, time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
