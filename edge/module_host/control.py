"""The gateway's control of its modules: run mode, desired state, health snapshots, live entitlements.

- Each configured module starts in its run mode: the config's `run_mode`, else its manifest's; a `command`
  makes it a sidecar (isolated, any language). Isolated ones go to `edge.sidecar` (supervised processes).
- Every second it applies the operators' desired state (`edge module enable|disable`, kept in
  `{data_dir}/modules.db` so it survives restarts; a recorded choice wins over the config's `enabled`),
  writes a health snapshot of every module for the CLI, and looks at the config file: a change of a tenant's
  `entitlements` is applied live through the tenant registry (edge.module_host.tenants) and logged (other
  edits take effect at the next start).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge.config import LoadedConfig, load_config
from edge.config.models import ModuleConfig
from edge.module_host.host import HostedModule, ModuleHost, ModuleState
from edge.module_host.state import Desired, ModuleSnapshot, ModuleStateStore
from edge.plugins import PluginRegistry
from edge.sdk.errors import ConfigError
from edge.sdk.grid import sleep_until_next_tick

if TYPE_CHECKING:  # the supervisor loads grpc, protobuf and psutil (~10 MB): only once a module runs isolated
    from edge.module_host.supervisor import Isolation, Limits, Supervisor

log = logging.getLogger(__name__)

RECONCILE_INTERVAL = 1.0
# an unchanged snapshot is rewritten this often (its time keeps it live: state.FRESH), not every second: each
# write is a transaction with an fsync, the largest part of an idle gateway's CPU
SNAPSHOT_REFRESH = 2.0


@dataclass
class _Applied:
    enabled: bool
    changed: float  # the desired-state record applied (0: the config's `enabled`)


class ModuleControl:
    def __init__(
        self,
        loaded: LoadedConfig,
        registry: PluginRegistry,
        host: ModuleHost,
    ) -> None:
        self._loaded = loaded
        self._registry = registry
        self._host = host
        self._configs = {m.name: m for m in loaded.config.modules}
        self._isolation: Isolation | None = None  # gRPC is imported only when a module runs isolated
        self.state = ModuleStateStore(loaded.data_dir)
        self._applied: dict[str, _Applied] = {}
        self._config_mtime = _mtime(loaded)
        # tenants whose entitlements their platform decides (edge.downlink): file edits leave them alone
        self.platform_decides: set[str] = set()
        self.on_module_start: list[Callable[[str], None]] = []  # the entitlement service asks again
        self._written: tuple[list[ModuleSnapshot] | None, float] = (None, 0.0)  # last snapshots written, when
        self._desired_stamp: tuple[int, ...] | None = None  # the state file as `reconcile` last read it

    async def start(self) -> None:
        desired = await asyncio.to_thread(self.state.desired)
        for name, module in self._configs.items():
            wanted = desired.get(name)
            enabled = wanted.enabled if wanted is not None else module.enabled
            self._applied[name] = _Applied(enabled, wanted.changed if wanted else 0.0)
            if enabled:
                await self._start(module)
        await self.snapshot()

    def isolation(self) -> Isolation:
        if self._isolation is None:
            from edge.module_host.supervisor import Isolation

            self._isolation = Isolation(self._host, self._loaded.data_dir)
        return self._isolation

    def supervisor(self, name: str) -> Supervisor | None:
        return self._isolation.supervisors.get(name) if self._isolation is not None else None

    def supervisors(self) -> Mapping[str, Supervisor]:
        """The isolated modules' and sidecars' supervisors (restarts, circuit state), by module name."""
        return self._isolation.supervisors if self._isolation is not None else {}

    async def _start(self, module: ModuleConfig) -> HostedModule | None:
        for listener in self.on_module_start:
            listener(module.name)
        if module.command is not None:  # a sidecar: its manifest comes when it registers
            return await self.isolation().start(
                module.name, module.config, module.command, env=module.env, limits=_limits(module)
            )
        plugin = self._registry.module(module.name)
        if plugin is None:
            log.error(
                "module %s is configured but not installed (%s)",
                module.name,
                self._registry.failures.get(module.name, "no such plug-in"),
            )
            return None
        if (module.run_mode or plugin.manifest.run_mode) == "isolated":
            from edge.module_host.supervisor import runner_command

            return await self.isolation().start(
                module.name,
                module.config,
                runner_command(module.name),
                manifest=plugin.manifest,
                env=module.env,
                limits=_limits(module),
            )
        return await self._host.start(module.name, plugin, module.config)

    async def run(self) -> None:
        """Apply desired state, write snapshots and follow entitlement edits, every second."""
        while True:
            await self.reconcile()
            await self.snapshot()
            await self._follow_config()
            await sleep_until_next_tick(RECONCILE_INTERVAL)

    async def reconcile(self) -> None:
        # Operators change the desired state from another process (`edge module enable|disable`); the file is
        # read (a thread hop, every second) only when it changed since the last read.
        stamp = self.state.stamp() if self._configs else None
        if stamp is None or stamp == self._desired_stamp:
            return
        self._desired_stamp = stamp
        desired: dict[str, Desired] = await asyncio.to_thread(self.state.desired)
        for name, wanted in desired.items():
            module = self._configs.get(name)
            applied = self._applied.get(name)
            if module is None or applied is None or wanted.changed <= applied.changed:
                continue
            self._applied[name] = _Applied(wanted.enabled, wanted.changed)
            await self._host.stop_module(name)  # enabling again also re-arms an open circuit
            if self._isolation is not None:
                self._isolation.supervisors.pop(name, None)
            if wanted.enabled:
                log.info("module %s enabled by an operator", name)
                await self._start(module)
            else:
                log.info("module %s disabled by an operator", name)

    async def snapshot(self) -> None:
        health = await self._host.health()
        snapshots = []
        for name, module in self._configs.items():
            hosted = self._host.modules.get(name)
            enabled = self._applied.get(name, _Applied(module.enabled, 0.0)).enabled
            snapshots.append(self._snapshot(name, module, hosted, health.get(name), enabled))
        last, when = self._written
        if snapshots == last and (not snapshots or time.monotonic() - when < SNAPSHOT_REFRESH):
            return  # nothing changed (and with no module configured, an empty table stays empty)
        await asyncio.to_thread(self.state.write_snapshots, snapshots)
        self._written = (snapshots, time.monotonic())

    def _snapshot(
        self, name: str, module: ModuleConfig, hosted: HostedModule | None, health: Any, enabled: bool
    ) -> ModuleSnapshot:
        supervisor = self.supervisor(name)
        isolated = supervisor is not None or module.command is not None
        if hosted is None or not enabled:
            state = "disabled" if not enabled else "not installed"
            return ModuleSnapshot(
                name, "", "isolated" if isolated else "in_process", state, not enabled, state
            )
        manifest = hosted.plugin.manifest
        state = hosted.state.value
        if supervisor is not None and hosted.state is ModuleState.ENABLED:
            state = supervisor.state.value
        gate = hosted.gate
        return ModuleSnapshot(
            name=name,
            version=manifest.version,
            run_mode="isolated" if isolated else "in_process",
            state=state,
            ok=bool(health and health.ok),
            detail=health.detail if health else "",
            entitlement=manifest.entitlement,
            tenants=[t.tenant_id for t in self._host.entitled(manifest.entitlement)],
            handled=hosted.handled,
            handler_errors=hosted.handler_errors,
            refused=dict(gate.refused) if gate else {},
            adapted=gate.adapted if gate else 0,
            pid=supervisor.pid if supervisor else os.getpid(),
            launches=supervisor.launches if supervisor else 1,
            crashes=supervisor.crashes if supervisor else 0,
            last_exit=supervisor.last_exit if supervisor else None,
        )

    async def _follow_config(self) -> None:
        mtime = _mtime(self._loaded)
        if mtime == self._config_mtime:
            return
        self._config_mtime = mtime
        try:
            loaded = await asyncio.to_thread(load_config, self._loaded.path, self._registry)
        except ConfigError as exc:
            log.error("the edited configuration is invalid; keeping the running one:\n%s", exc)
            return
        tenants = self._host.tenants  # the one record of entitlements (API changes land there too)
        for tenant in loaded.config.tenants:
            flags = frozenset(tenant.entitlements)
            if tenant.id in self.platform_decides:
                continue
            if tenant.id in tenants and flags != tenants[tenant.id].entitlements:
                log.info("configuration changed: applying tenant %s's entitlements", tenant.id)
                await tenants.set_entitlements(tenant.id, flags)

    async def stop(self) -> None:
        if self._isolation is not None:
            await self._isolation.stop()
        try:
            await asyncio.to_thread(self.state.mark_stopped)
        except (
            sqlite3.Error,
            OSError,
        ) as exc:  # a full disk must not keep the rest of the gateway from stopping
            log.warning("could not record the modules as stopped in %s: %s", self.state.path, exc)
        finally:
            self.state.close()


def _mtime(loaded: LoadedConfig) -> float:
    try:
        return loaded.path.stat().st_mtime_ns / 1e9
    except OSError:
        return 0.0


def _limits(module: ModuleConfig) -> Limits:
    """An isolated module's or sidecar's limits; imports the supervisor, so only for those."""
    from edge.module_host.supervisor import Limits

    return Limits(
        memory_bytes=module.limits.memory,
        cpu_percent=module.limits.cpu_percent,
        health_timeout=module.limits.health_timeout,
        handler_timeout=module.limits.handler_timeout,
        max_crashes=module.limits.max_crashes,
    )
