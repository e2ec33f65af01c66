"""The gateway process: wires configuration, outbox, bus, pollers, publishers, commands and modules together.

Data flows one way (docs/architecture.md):
    DevicePoller (driver raw I/O -> DeviceNormalizer -> telemetry event)
      -> OutboxStore: SQLite or PostgreSQL (group commit, durable)
        -> OutboxPublisher (MQTT events, acked before its cursor moves)
        -> LastValuePublisher (retained per-point topics)
        -> ModuleHost (durable per-module consumers)
        -> WebhookDispatcher (durable per-subscription consumers, signed HTTP deliveries)
        -> ApiServer (latest-value cache and live WebSocket streams; REST reads, history and writes)

It only wires: each part gets the narrow services it uses (the API an `ApiServices`, the health monitor the
parts it checks), never the gateway. The status snapshot and backlogs are edge.ops.status, task supervision
edge.ops.supervision; the start and stop order is here (docs/architecture.md, "Shutdown and durability").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from edge.bus.backend import open_bus
from edge.bus.homeassistant import HomeAssistantDiscovery
from edge.bus.mqtt import MqttBus, Will
from edge.bus.publisher import MQTT_CONSUMER, LastValuePublisher, OutboxPublisher
from edge.bus.topics import Topics
from edge.cluster.devices import ClusterDevices, FencedSink, event_spacing
from edge.cluster.fence import LeaseFence, fence_store
from edge.config import LoadedConfig
from edge.config.history import ConfigHistory
from edge.devices.commands import WRITE_TIMEOUT, CommandHandler
from edge.devices.fleet import DeviceChanges, LiveDevices
from edge.devices.forward import WriteForwarder
from edge.devices.polling import DevicePoller, StatusListener
from edge.module_host.commands import ModuleCommands
from edge.module_host.control import ModuleControl
from edge.module_host.host import ModuleHost
from edge.module_host.tenants import Tenants
from edge.ops.health import HealthMonitor
from edge.ops.instance import InstanceLock
from edge.ops.quotas import Quotas
from edge.ops.stats import DeviceStats, GatewayStats
from edge.ops.status import DownlinkStatus, GatewayStatus, StatusSnapshot
from edge.ops.supervision import TaskSupervisor
from edge.outbox.backends import build_outbox, module_store
from edge.outbox.retention import Retention
from edge.outbox.router import misplaced_tenants
from edge.plugins import PluginRegistry
from edge.sdk.drivers import DeviceSpec
from edge.sdk.tenancy import TenantContext, current_tenant
from edge.webhooks import WebhookDispatcher, WebhookStore, delivery_policy, destination_policy, open_store


def enabled_devices(loaded: LoadedConfig) -> list[DeviceSpec]:
    disabled = {d.name for d in loaded.config.devices if not d.enabled}
    return [spec for spec in loaded.devices if spec.name not in disabled]


if TYPE_CHECKING:
    from edge.api import ApiServer
    from edge.cluster.member import ClusterMember
    from edge.downlink import Downlink

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, loaded: LoadedConfig, registry: PluginRegistry) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.registry = registry
        self.stats = GatewayStats()
        self.quotas = Quotas(
            {t.id: loaded.config.tenant_limits(t.id) for t in loaded.config.tenants}, self.stats
        )
        self.tenants = Tenants(loaded.tenant_contexts().values())  # entitlements live here, changed live
        self.topics = Topics(self.config.bus.topic_prefix)
        self.outbox = build_outbox(self.config, loaded.data_dir)  # the configured backend and tiers
        gateway_id = self.config.gateway.id
        # cluster mode: instances share the broker, so each needs its own session and status topic
        self.instance = (loaded.instance or socket.gethostname()) if self.config.cluster.enabled else None
        member_id = gateway_id if self.instance is None else f"{gateway_id}-{self.instance}"
        tenant_ids = [t.id for t in self.config.tenants]
        backend = open_bus(loaded, self.topics, tenant_ids, member_id)  # [bus] mode
        self.broker = backend.broker
        self._login = backend.login  # the site dialects' own sessions log in like the bus
        self._bus_address = backend.address
        self.bus = backend.bus
        self._session_gate = backend.session_gate
        self.pollers: dict[tuple[str, str, str], DevicePoller] = {}
        self.devices = LiveDevices(self.pollers, self._start_device, self._stop_device)
        self._last_sequences: dict[str, int] = {}  # of pollers stopped in this process: a restart continues
        self.cluster: ClusterMember | None = None  # cluster mode: which devices this instance polls
        self.leading: set[str] = set()  # cluster mode: tenants whose tenant-wide consumers run here
        self._leader_tasks: dict[str, tuple[Callable[[], Coroutine[Any, Any, None]], str]] = {}  # per tenant
        # cluster mode on PostgreSQL: one outbox for all instances, so its consumers run on each tenant's leader
        self._shared_outbox = self.config.cluster.enabled and self.config.storage.backend == "postgresql"
        # told the enabled devices after each live change (the site dialects: Sparkplug B, Home Assistant)
        self.on_devices_changed: list[Callable[[Sequence[DeviceSpec]], None]] = []
        self._on_status: StatusListener | None = None
        self._last_values: LastValuePublisher | None = None
        self.history = ConfigHistory(loaded.data_dir)  # versions for `edge config history|rollback`
        self.downlink: Downlink | None = None  # when a tenant has a [tenants.cloud] (edge/downlink)
        self.modules = ModuleHost(
            self.outbox,
            self.tenants,
            gateway_id,
            loaded.data_dir,
            stores=lambda name: module_store(self.config, loaded.data_dir, name),  # the storage backend's
            feed=backend.module_feed,  # type: ignore[arg-type]
            quotas=self.quotas,
        )
        self.module_control = ModuleControl(loaded, registry, self.modules)
        self.module_commands: ModuleCommands | None = None
        self.commands: CommandHandler | None = None
        self.api: ApiServer | None = None
        self.webhooks: WebhookStore | None = None  # opened at start, beside the outbox
        self._status = GatewayStatus(
            self.stats, self.outbox, self.bus, self.tenants.values(), self.pollers, self._downlink_status
        )
        if self.config.api.enabled:
            self.api = self._api()
        self._tasks = TaskSupervisor(self.stats.task_restarts)
        self._instance = InstanceLock(loaded.data_dir)
        self.health = HealthMonitor(  # liveness and readiness: `await gateway.health.check()`
            data_dir=loaded.data_dir,
            outbox=self.outbox,
            bus=self.bus,
            broker_address=backend.address,
            pollers=self.pollers,
            stats=self.stats,
            modules=self.modules,
        )

    def _downlink_status(self) -> dict[str, DownlinkStatus]:
        return self.downlink.status() if self.downlink is not None else {}

    def _api(self) -> ApiServer:
        # FastAPI and uvicorn load only for a gateway that serves the API
        from edge.api import ApiServer, ApiServices

        services = ApiServices(
            loaded=self.loaded,
            tenants=self.tenants,
            outbox=self.outbox,
            stats=self.stats,
            polled=self.pollers,
            bus=self.bus,
            modules=self.modules,
            status=self._status.snapshot,
            outboxes=self._status.tenant_outboxes,
            set_entitlements=self.set_entitlements,
            submit_module_command=self.submit_module_command,
            registry=self.registry,
            start_new_devices=self.start_new_devices,
            commands=lambda: self.commands,
            webhooks=lambda: self.webhooks,
            limits=self.quotas,
            supervisors=self.module_control.supervisors,
            downlink=self._downlink_status,
        )
        return ApiServer(services, self.config.api)

    async def start(self) -> None:
        self._instance.acquire()
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        await self.outbox.open()
        if self.config.storage.backend == "sqlite":
            tiers = {t.id: t.storage for t in self.config.tenants}
            shared = self.loaded.data_dir / self.config.storage.path
            for problem in misplaced_tenants(self.loaded.data_dir, shared, tiers):
                log.error("%s", problem)
        if self.broker is not None:
            await self.broker.start()
        await self.bus.start()
        last_values = LastValuePublisher(
            self.bus,
            self.topics,
            self.stats,
            qos=self.config.bus.point_qos,
            min_interval=self.config.bus.point_min_interval,
            per_device=self.config.bus.point_topic_mode == "device",
            share=self.quotas,
        )
        if self.config.bus.point_topics:
            self.outbox.add_commit_listener(last_values.on_commit)
        sequences = await self.outbox.last_sequences()
        self._on_status = last_values.on_status
        self._last_values = last_values
        if not self.config.cluster.enabled:  # in cluster mode, the devices whose leases this instance takes
            for spec in enabled_devices(self.loaded):
                poller = self._poller(spec, sequences.get((spec.tenant, spec.name), 0))
                self.pollers[(spec.tenant, spec.site, spec.name)] = poller
        self.module_commands = ModuleCommands(
            self.bus,
            self.topics,
            self.tenants,
            self.outbox,
            self.modules.serves,
            self.stats,
            self.config.gateway.id,
            limit=self.quotas.module_command,
        )
        commands = CommandHandler(
            self.bus,
            self.topics,
            self.pollers,
            self.tenants,
            self.outbox,
            self.stats,
            self.config.gateway.id,
            self.module_commands,
        )
        if self.config.cluster.enabled:
            configured = {(s.tenant, s.site, s.name) for s in enabled_devices(self.loaded)}
            commands.polled_elsewhere = lambda key: key in configured and key not in self.pollers
            commands.leads = self.leading.__contains__
            # the owner's own device timeout, then the bus both ways: beyond that nobody will answer
            commands.forwarder = WriteForwarder(self.bus, self.topics, timeout=WRITE_TIMEOUT + 5.0)
        self.commands = commands
        self._start_dialects(commands)
        self.modules.point_writer = self._module_write
        self.history.record(self.loaded.path.read_text(), source="start")
        if any(t.cloud is not None for t in self.config.tenants):
            await self._start_downlink(commands)
        if self._shared_outbox:
            self.modules.runs_here = self.leading.__contains__
        await self.module_control.start()  # in-process or isolated, as configured and as operators left them
        self.outbox.hold(MQTT_CONSUMER, self.tenants)  # modules' consumers hold rows too (ModuleHost)
        self.webhooks = open_store(self.loaded)
        webhooks = WebhookDispatcher(
            self.outbox,
            self.webhooks,
            self.tenants.values(),
            destination_policy(self.loaded),
            delivery_policy(self.loaded),
            reload_interval=self.config.webhooks.reload_interval,
            pace=self.quotas.webhook,
        )
        if self._shared_outbox:
            webhooks.runs_here = self.leading.__contains__
        await webhooks.sync()  # subscriptions hold their rows before the first retention sweep
        self._tasks.spawn(webhooks.run, "webhooks")
        self._tasks.spawn(self.health.lag.run, "loop-lag")
        if not self._shared_outbox:  # else each tenant's leader runs them (`_lead`)
            self._tasks.spawn(self._retention(self.tenants.values()).run, "retention")
            self._tasks.spawn(self._publisher(self.tenants.values()).run, "publisher")
        self._tasks.spawn(last_values.run, "last-values")
        self._tasks.spawn(commands.run, "commands")
        self._tasks.spawn(self.module_control.run, "module-control")
        for (_, _, name), poller in self.pollers.items():
            self._tasks.spawn(poller.run, f"poll-{name}")
        if self.config.cluster.enabled:
            await self._join_cluster()
        if self.api is not None:
            await self.api.start()
            self._tasks.spawn(self.api.serve, "api")
        log.info(
            "gateway %s started: %d devices, %d tenants, bus %s (%s)",
            self.config.gateway.id,
            len(self.pollers),
            len(self.tenants),
            self._bus_address,
            self.config.bus.mode,
        )

    def _publisher(self, tenants: Iterable[TenantContext]) -> OutboxPublisher:
        return OutboxPublisher(
            self.outbox,
            self.bus,
            self.topics,
            tenants,
            self.stats,
            qos=self.config.bus.qos,
            gate=self._session_gate,  # the embedded broker's restored sessions (edge.bus.backend)
            pace=self.quotas.publish,
        )

    def _retention(self, tenants: Iterable[TenantContext]) -> Retention:
        interval = self.config.storage.retention_interval
        return Retention(self.outbox, tenants, self.config.gateway.id, interval=interval)

    async def _join_cluster(self) -> None:
        """Cluster mode (edge/cluster): devices start and stop as this instance takes and gives up leases."""
        from edge.cluster.member import ClusterMember  # psycopg loads only in cluster mode

        assert self.instance is not None
        holder = ClusterDevices(
            self.pollers,
            lambda: {s.name: s for s in enabled_devices(self.loaded)},
            self._start_device,
            self._stop_device,
            self._lead,
        )
        self.cluster = ClusterMember(
            self.config.cluster,
            self.config.gateway.id,
            self.instance,
            holder,
            database=self.config.cluster_database(),
            tenants=[t.id for t in self.config.tenants],
            event_spacing=event_spacing(enabled_devices(self.loaded)),
        )
        if self._shared_outbox:  # commits check the leases too (edge/cluster/fence.py)
            fence = LeaseFence(self.config.gateway.id, self.cluster.token)
            for tenant in self.config.tenants:
                if tenant.storage == "shared":
                    fence_store(self.outbox, tenant.id, fence)
        await self.cluster.join()
        self._tasks.spawn(self.cluster.run, "cluster")

    async def _lead(self, tenant: str, leading: bool) -> None:
        """This instance became (or stopped being) the tenant's leader. The tenant's downlink long-poll and its
        module commands over MQTT are taken here only. On a shared outbox the tenant's MQTT
        publisher, retention, module consumers and ticks (cloud uplink among them) and webhooks run here and
        nowhere else, each from its durable cursor. On per-instance SQLite outboxes every instance runs its
        own over its own devices' events, and leadership changes nothing."""
        if leading:
            self.leading.add(tenant)
        else:
            self.leading.discard(tenant)
        if tenant in self._leader_tasks:  # the tenant's downlink long-poll: one per tenant, not per instance
            run, name = self._leader_tasks[tenant]
            if leading:
                self._tasks.spawn(run, name)
            else:
                await self._tasks.cancel_one(name)
        if not self._shared_outbox:
            return
        ctx = self.tenants[tenant]
        if leading:
            self._tasks.spawn(self._publisher([ctx]).run, f"lead-{tenant}-publisher")
            self._tasks.spawn(self._retention([ctx]).run, f"lead-{tenant}-retention")
        else:
            await self._tasks.cancel_one(f"lead-{tenant}-publisher")
            await self._tasks.cancel_one(f"lead-{tenant}-retention")
        await self.modules.lead(tenant, leading)  # webhooks follow `leading` at their next reload

    def _start_dialects(self, commands: CommandHandler) -> None:
        """Sparkplug B and Home Assistant discovery for the tenants that enable them (docs/mqtt-access.md)."""
        tenants = self.config.tenants
        devices = enabled_devices(self.loaded)
        sparkplug = {t.id: t.sparkplug for t in tenants if t.sparkplug is not None and t.sparkplug.enabled}
        if sparkplug:
            from edge.bus.sparkplug import SparkplugOutput  # protobuf loads only for a gateway that speaks it

            output = SparkplugOutput(
                self.config.gateway.id,
                sparkplug,
                devices,
                self._dialect_bus,
                commands.write,
                self.loaded.data_dir,
            )
            self.outbox.add_commit_listener(output.on_commit)
            self.on_devices_changed.append(output.devices_changed)
            for tenant, node in output.nodes.items():
                self._tasks.spawn(node.run, f"sparkplug-{tenant}")
        assistant = {t.id: t.homeassistant for t in tenants if t.homeassistant is not None}
        if any(c.enabled for c in assistant.values()) or (self.loaded.data_dir / "homeassistant").exists():
            discovery = HomeAssistantDiscovery(
                self.bus, self.topics, self.config.gateway.id, assistant, devices, self.loaded.data_dir
            )
            self.outbox.add_commit_listener(discovery.on_commit)
            self.on_devices_changed.append(discovery.devices_changed)
            self._tasks.spawn(discovery.run, "homeassistant")

    def _dialect_bus(self, client_id: str, will: Will) -> MqttBus:
        bus = self.config.bus
        username, password = self._login
        return MqttBus(
            bus.host,
            bus.port,
            client_id,
            username=username,
            password=password,
            will=will,
            max_inbound_payload=bus.max_payload,
            max_outbound_payload=bus.max_payload,
            reconnect_max=5.0,
        )

    async def _start_downlink(self, commands: CommandHandler) -> None:
        from edge.downlink import Downlink, DownlinkServices
        from edge.downlink.commands import CommandServices
        from edge.downlink.deploy import DeployServices

        module_commands = self.module_commands
        assert module_commands is not None
        services = DownlinkServices(
            commands=CommandServices(commands.write, module_commands.submit),
            deploy=DeployServices(
                path=self.loaded.path,
                registry=self.registry,
                history=self.history,
                reconfigure=self.reconfigure,
                down=self.devices.down,
                timeout=self.config.cloud.deploy_timeout,
            ),
            set_entitlements=self.set_entitlements,
            append=self.outbox.append_durable,
            tenant=self.tenants.__getitem__,
        )
        self.downlink = Downlink(self.loaded, services, self.history)
        self.module_control.platform_decides.update(self.downlink.platform_entitled)
        self.module_control.on_module_start.append(self.downlink.entitlements.module_loaded)
        await self.downlink.start()  # the last entitlement answers apply before any module starts
        for run, name in self.downlink.tasks():
            if self.config.cluster.enabled and name.removeprefix("downlink-") in self.downlink.links:
                self._leader_tasks[name.removeprefix("downlink-")] = (run, name)  # the tenant's leader polls
            else:
                self._tasks.spawn(run, name)

    def _poller(self, spec: DeviceSpec, last_sequence: int) -> DevicePoller:
        self.stats.devices[spec.name] = DeviceStats()  # a new poller (a device changed live) starts unknown
        sink = self.outbox if self.cluster is None else FencedSink(self.outbox, spec.name, self.cluster.owns)
        return DevicePoller(
            spec,
            self.registry.driver(spec.driver),
            self.tenants[spec.tenant],
            sink,
            gateway_id=self.config.gateway.id,
            last_sequence=last_sequence,
            stats=self.stats.devices[spec.name],
            on_status=self._on_status,
            pace=functools.partial(self.quotas.ingest, spec.tenant),
        )

    async def _start_device(
        self, spec: DeviceSpec, sequence_floor: int = 0, unpolled: str | None = None
    ) -> DevicePoller:
        """Cluster mode: `sequence_floor`, where the device's lease says its last owner got to; `unpolled`, why
        nobody polled it for a while (reported as down before the first poll here reports it up)."""
        sequences = await self.outbox.last_sequences()  # a device that comes back resumes its sequence
        last = max(
            sequences.get((spec.tenant, spec.name), 0), sequence_floor, self._last_sequences.get(spec.name, 0)
        )
        poller = self._poller(spec, last)
        if unpolled is not None:
            await poller.report_down(unpolled)
        self._tasks.spawn(poller.run, f"poll-{spec.name}")
        return poller

    async def _stop_device(self, poller: DevicePoller) -> None:
        poller.request_stop()
        await self._tasks.cancel_one(f"poll-{poller.spec.name}")
        self._last_sequences[poller.spec.name] = poller.sequence

    async def reconfigure(self, loaded: LoadedConfig) -> DeviceChanges:
        """Run on a new, already validated configuration: devices added, changed and removed live, and each
        tenant's entitlements as the file says (except tenants whose platform decides them). Other sections
        (bus, storage, api, modules) take effect at the next start."""
        self.loaded, self.config = loaded, loaded.config
        if self.api is not None:
            self.api.config_changed(loaded)
        wanted = enabled_devices(loaded)
        if self.cluster is not None:  # the devices this instance holds; the next renewal claims new ones
            self.cluster.set_devices(event_spacing(wanted))
            wanted = [s for s in wanted if s.name in self.cluster.devices]
        changes = await self.devices.apply(wanted)
        if changes:  # the site dialects (refused in cluster mode, where `wanted` is this instance's share)
            for listener in self.on_devices_changed:
                listener(wanted)
        for tenant in loaded.config.tenants:
            if tenant.id in self.tenants and tenant.id not in self.module_control.platform_decides:
                await self.tenants.set_entitlements(tenant.id, tenant.entitlements)
        return changes

    async def start_new_devices(self, loaded: LoadedConfig) -> list[str]:
        """After `edge device add` or the console's commissioning re-read the file: its devices made the running
        ones (added, changed and removed live); returns the names of those added."""
        changes = await self.reconfigure(loaded)
        return list(changes.added)

    async def submit_module_command(
        self,
        tenant: str,
        module: str,
        action: str,
        args: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> str:
        """Queue a command for a module on behalf of a tenant (the REST API's entry); returns the request id
        to match the module's `org.edgegw.module.command.result` event. Raises ModuleCommandRejected."""
        if self.module_commands is None:
            raise RuntimeError("the gateway is not started")
        return await self.module_commands.submit(tenant, module, action, args, request_id)

    async def _module_write(self, module: str, site: str, device: str, point: str, value: Any) -> None:
        if self.commands is None:
            raise RuntimeError("the gateway is not started")
        tenant = current_tenant().tenant_id
        await self.commands.write_for_module(module, tenant, site, device, point, value)

    async def stop(self) -> None:
        """Stop polling, commit what was read, then close the bus and the broker."""
        if self.api is not None:
            await self.api.stop()  # no new requests or writes while the rest stops
        if self.cluster is not None:  # a rolling upgrade: the others take the devices before this one stops
            await self.cluster.drain(self.config.cluster.drain_timeout)
            await self._tasks.cancel_one("cluster")
            # what is left (no other instance could take it): released with exact sequences for the next start
            await self.cluster.stop()
        for poller in self.pollers.values():
            poller.request_stop()
        await self._tasks.cancel("poll-")
        await self.module_control.stop()
        await self.modules.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._status.published(), 2.0)
        if self._last_values is not None:  # the retained statuses tell the stop (it may be in its interval)
            await self._tasks.cancel_one("last-values")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._last_values.drain(), 2.0)
        await self._tasks.cancel()
        if self.downlink is not None:
            await self.downlink.close()
        self.history.close()
        if self.webhooks is not None:
            self.webhooks.close()
        await self.outbox.close()
        await self.bus.stop()
        if self.broker is not None:
            await self.broker.stop()
        self._instance.release()
        log.info("gateway %s stopped", self.config.gateway.id)

    async def set_entitlements(self, tenant_id: str, flags: Iterable[str]) -> None:
        """Change a tenant's entitlement flags live (modules gain or lose its events at once; logged).
        Raises KeyError for a tenant this gateway does not serve."""
        if tenant_id not in self.tenants:
            raise KeyError(f"no tenant {tenant_id!r} on gateway {self.config.gateway.id}")
        await self.tenants.set_entitlements(tenant_id, flags)

    async def backlog(self) -> int:
        """Events the MQTT publisher has not yet published, all tenants together."""
        return await self._status.backlog()

    async def status(self) -> StatusSnapshot:
        return await self._status.snapshot()
