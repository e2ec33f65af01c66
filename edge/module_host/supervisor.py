"""The kernel launches and supervises isolated modules and sidecars, one OS process each.

A launch gets the socket path and a fresh token in its environment (EDGE_SIDECAR_SOCKET, EDGE_SIDECAR_TOKEN,
EDGE_MODULE). The supervisor watches the process: it ends it (SIGKILL) when it exits, stops reporting health
(a hung module), stays above its memory limit (RSS) or its CPU limit (share of one core over a window), and
launches it again after a capped exponential backoff (1 s -> 60 s). After `max_crashes` short-lived runs in a
row it opens the circuit: no more launches, reported in health and status, until an operator re-enables the
module (`edge module enable`). A module that reports itself unhealthy but answers is not restarted: it
knows why (a cloud that is down, say), and restarting would not help.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import secrets
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import psutil

from edge.module_host.host import HostedModule, ModuleHost, ModuleState
from edge.module_host.sidecar_server import RemoteModule, SidecarServer
from edge.plugins import LoadedPlugin, Manifest
from edge.sdk.backoff import Backoff
from edge.sdk.modules import Health, module_consumer

log = logging.getLogger(__name__)

_WATCH_INTERVAL = 0.25  # seconds between looks at the process (exit, RSS, CPU, health)


class RunState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    CIRCUIT_OPEN = "circuit_open"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = 256 << 20  # RSS above this ends the process
    cpu_percent: float | None = None  # of one core, averaged over `cpu_window` once registered
    cpu_window: float = 10.0
    health_timeout: float = 15.0  # no Health call for this long (after registering) ends the process
    handler_timeout: float = 60.0  # one handler call this long: the SDK runner stops reporting health
    start_timeout: float = 30.0  # not registered this long after launch ends the process
    max_crashes: int = 5  # short-lived runs in a row before the circuit opens
    stable_after: float = 30.0  # a run this long resets the crash count and the backoff
    backoff_initial: float = 1.0
    backoff_cap: float = 60.0


def runner_command(module: str) -> list[str]:
    """How an installed Python module runs isolated: the SDK runner, in this interpreter."""
    return [sys.executable, "-m", "edge.sdk.runner", module]


class Supervisor:
    """Launches one isolated module again and again, within its limits, until stopped or the circuit opens."""

    def __init__(
        self,
        remote: RemoteModule,
        server: SidecarServer,
        command: Sequence[str],
        env: Mapping[str, str],
        limits: Limits,
    ) -> None:
        self.remote = remote
        self._server = server
        self._command = list(command)
        self._env = dict(env)
        self.limits = limits
        self.state = RunState.STOPPED
        self.launches = 0
        self.restarts = 0  # launches after the process stopped on its own or was ended (/metrics)
        self.crashes = 0
        self.last_exit: str | None = None
        self.pid: int | None = None
        self._backoff = Backoff(limits.backoff_initial, limits.backoff_cap)
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.remote.name

    def start(self) -> None:
        if self._task is None or self._task.done():
            self.crashes = 0
            self._backoff.reset()
            self._task = asyncio.create_task(self._run(), name=f"isolated-{self.name}")

    async def stop(self, grace: float = 5.0) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._end(grace)
        self.state = RunState.STOPPED

    @property
    def circuit_open(self) -> bool:
        return self.state is RunState.CIRCUIT_OPEN

    def health(self) -> Health:
        state = self.state
        if state is RunState.CIRCUIT_OPEN:
            return Health(False, f"circuit open after {self.crashes} crashes (last: {self.last_exit})")
        if state is not RunState.RUNNING:
            return Health(
                False, f"{state.value}" + (f" (last exit: {self.last_exit})" if self.last_exit else "")
            )
        return self.remote.health

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                reason = await self._launch_and_watch()
            except Exception as exc:  # a supervisor bug must not leave the module unsupervised
                log.exception("module %s: supervising it failed", self.name)
                reason = f"supervisor error: {type(exc).__name__}: {exc}"
            self.last_exit = reason
            if time.monotonic() - started >= self.limits.stable_after:
                self.crashes = 0
                self._backoff.reset()
            self.crashes += 1
            if self.crashes >= self.limits.max_crashes:
                self.state = RunState.CIRCUIT_OPEN
                self.remote.hosted.state, self.remote.hosted.error = ModuleState.FAILED, self.health().detail
                log.error(
                    "module %s: %d crashes in a row (last: %s); circuit open, not restarting it until it is "
                    "enabled again",
                    self.name,
                    self.crashes,
                    reason,
                )
                return
            delay = self._backoff.next_delay()
            self.state = RunState.BACKOFF
            log.warning(
                "module %s stopped (%s); restarting in %.1f s (crash %d of %d before the circuit opens)",
                self.name,
                reason,
                delay,
                self.crashes,
                self.limits.max_crashes,
            )
            await asyncio.sleep(delay)
            self.restarts += 1

    async def _launch_and_watch(self) -> str:
        token = secrets.token_urlsafe(24)
        env = {
            **os.environ,
            **self._env,
            "EDGE_SIDECAR_SOCKET": str(self._server.socket),
            "EDGE_SIDECAR_TOKEN": token,
            "EDGE_MODULE": self.name,
            "EDGE_HANDLER_TIMEOUT": str(self.limits.handler_timeout),
        }
        self._server.expect(token, self.remote)
        self.remote.launched()
        self.state = RunState.STARTING
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._command,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,  # the gateway's terminal signals are not the module's
                preexec_fn=_child_limits,
            )
        except OSError as exc:
            self._server.forget(token)
            return f"cannot launch {self._command[0]}: {exc}"
        self.launches += 1
        self.pid = self._process.pid
        log.info("module %s launched (pid %d, launch %d)", self.name, self.pid, self.launches)
        try:
            return await self._watch(self._process)
        finally:
            self._server.forget(token)  # a process of this launch can no longer call in
            await self._end(0.0)

    async def _watch(self, process: asyncio.subprocess.Process) -> str:
        limits, remote = self.limits, self.remote
        launched = time.monotonic()
        try:
            probe = psutil.Process(process.pid)
        except psutil.NoSuchProcess:  # gone already: its return code says why
            return _exit_reason(await process.wait())
        cpu_samples: list[tuple[float, float]] = []
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), _WATCH_INTERVAL)
            if process.returncode is not None:
                return _exit_reason(process.returncode)
            now = time.monotonic()
            try:
                memory = probe.memory_info().rss
                cpu = probe.cpu_times()
            except psutil.Error:
                continue  # exiting: the next look sees its return code
            if limits.memory_bytes is not None and memory > limits.memory_bytes:
                return await self._kill(
                    f"memory limit: RSS {memory >> 20} MiB > {limits.memory_bytes >> 20} MiB"
                )
            if remote.health_at is None:
                cpu_samples.clear()  # start-up (imports) is not held against the CPU limit
                if now - launched > limits.start_timeout:
                    return await self._kill(f"did not register within {limits.start_timeout:.0f} s")
                continue
            if self.state is RunState.STARTING:
                self.state = RunState.RUNNING
            if now - remote.health_at > limits.health_timeout:
                return await self._kill(f"no health report for {limits.health_timeout:.0f} s (hung?)")
            cpu_samples.append((now, cpu.user + cpu.system))
            while len(cpu_samples) > 1 and cpu_samples[1][0] <= now - limits.cpu_window:
                cpu_samples.pop(0)  # keep one sample at or before the window's start: it spans the window
            (t0, c0), (t1, c1) = cpu_samples[0], cpu_samples[-1]
            if limits.cpu_percent is not None and t1 - t0 >= limits.cpu_window:
                share = 100.0 * (c1 - c0) / (t1 - t0)
                if share > limits.cpu_percent:
                    return await self._kill(f"cpu limit: {share:.0f}% of a core > {limits.cpu_percent:.0f}%")

    async def _kill(self, reason: str) -> str:
        log.error("module %s: %s; ending it", self.name, reason)
        await self._end(0.0)
        return reason

    async def _end(self, grace: float) -> None:
        """SIGTERM (when there is a grace period), then SIGKILL; always reaps the process."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        if grace > 0:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), grace)
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def _child_limits() -> None:
    """In the child, before exec: no core dumps (module memory may hold tenants' data or secrets)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _exit_reason(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class _RemoteModuleHandle:
    """What the host holds for an isolated module: its lifecycle goes through the supervisor."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    async def on_init(self, context: Any) -> None:
        return None

    async def on_enable(self) -> None:
        self._supervisor.start()

    async def on_disable(self) -> None:
        await self._supervisor.stop()

    async def on_health_check(self) -> Health:
        return self._supervisor.health()


class Isolation:
    """The gateway's isolated modules: one gRPC server, one supervisor per module."""

    def __init__(self, host: ModuleHost, data_dir: Path) -> None:
        self._host = host
        self._data_dir = data_dir
        self.server = SidecarServer(host, data_dir)
        self.supervisors: dict[str, Supervisor] = {}
        self._started = False

    async def start(
        self,
        name: str,
        config: dict[str, Any],
        command: Sequence[str],
        *,
        manifest: Manifest | None = None,
        env: Mapping[str, str] | None = None,
        limits: Limits | None = None,
    ) -> HostedModule:
        """Launch an isolated module (`manifest` from its installed package) or a sidecar (manifest sent
        when it registers) and supervise it."""
        if not self._started:
            await self.server.start()
            self._started = True
        placeholder = manifest or Manifest(name, "module", "0.0.0", ">=1", entitlement=f"{name}:unregistered")
        hosted = HostedModule(name, LoadedPlugin(placeholder, None))
        data_dir = self._data_dir / "modules"
        data_dir.mkdir(parents=True, exist_ok=True)
        remote = RemoteModule(hosted, config, manifest, data_dir)
        supervisor = Supervisor(remote, self.server, command, env or {}, limits or Limits())
        for consumer, tenant in await self._host.outbox.stored_cursors(module_consumer(name, "")):
            self._host.outbox.hold(consumer, [tenant])  # its rows wait for it while it starts or is down
        hosted.module = _RemoteModuleHandle(supervisor)
        hosted.state = ModuleState.ENABLED
        self._host.modules[name] = hosted
        self.supervisors[name] = supervisor
        supervisor.start()
        return hosted

    async def stop(self) -> None:
        for supervisor in self.supervisors.values():
            await supervisor.stop()
        if self._started:
            await self.server.stop()
            self._started = False
