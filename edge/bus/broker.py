"""The gateway's own Mosquitto: a supervised child process serving the local bus on loopback.

The broker is deliberately not a durability point (``persistence false``): the SQLite outbox is, and it
replays whatever a broker restart loses. The config is written on every start, so edits to it are lost.
Mosquitto runs in its directory, with a minimal environment and, when the gateway is root, under an
unprivileged account (edge.bus.broker_process).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from edge.bus.access import AccessError, AccessStore
from edge.bus.broker_process import (
    BrokerAccount,
    broker_account,
    file_owner,
    launch_options,
    prepare_broker_dir,
    write_private,
)
from edge.config.models import is_loopback
from edge.sdk.errors import EdgeError

__all__ = ["BrokerError", "BrokerMissing", "EmbeddedBroker", "apply_access", "reload_broker"]

log = logging.getLogger(__name__)

_INSTALL_HINT: Final = "install it with: sudo apt-get install -y mosquitto (Debian/Ubuntu)"
_DEBIAN_PATH: Final = "/usr/sbin/mosquitto"  # Debian installs it here, often not on a non-root PATH
_START_TIMEOUT: Final = 10.0
_STOP_GRACE: Final = 5.0
_RESTART_MIN: Final = 0.5
_RESTART_MAX: Final = 10.0
_STABLE_AFTER: Final = 30.0  # a run this long resets the restart backoff
_LOG_ROTATE_BYTES: Final = 1024 * 1024
_TAIL_BYTES: Final = 2048
_PID_FILE: Final = "mosquitto.pid"
_CONF_FILE: Final = "mosquitto.conf"  # named relative to the broker's directory, its working directory


class BrokerError(EdgeError):
    """The embedded broker could not be started."""


class BrokerMissing(BrokerError):
    """No mosquitto binary was found."""

    def __init__(self, looked_at: str) -> None:
        self.looked_at = looked_at
        super().__init__(f"mosquitto not found on PATH ({looked_at}); {_INSTALL_HINT}")


class EmbeddedBroker:
    """Starts Mosquitto on ``host:port`` and restarts it (0.5 s -> 10 s backoff) if it dies."""

    def __init__(
        self,
        port: int,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        max_queued_messages: int = 100_000,
        message_size_limit: int = 256 * 1024,
        binary: str | None = None,
        access: AccessStore | None = None,
    ) -> None:
        if not is_loopback(host):
            # allow_anonymous is only acceptable while nothing but this machine can reach the listener.
            raise ValueError(f"the embedded broker listens on loopback only (no auth yet), got host {host!r}")
        self.port = port
        self.host = host
        self.data_dir = data_dir
        self.max_queued_messages = max_queued_messages
        self.message_size_limit = message_size_limit
        self.binary = binary
        if access is not None and access.dir != data_dir:
            raise ValueError(
                f"the broker's access files must be in its directory {data_dir}, not {access.dir}"
            )
        self.access = access  # per-tenant users and ACLs (edge.bus.access); None: anonymous only
        self.restarts = 0
        self.conf_path = data_dir / _CONF_FILE
        self.log_path = data_dir / "mosquitto.log"
        self.pid_path = data_dir / "mosquitto.pid"
        self._proc: asyncio.subprocess.Process | None = None
        self._log_offset = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._account: BrokerAccount | None = None  # who mosquitto runs as: decided at start

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def start(self) -> None:
        """Write the config, spawn mosquitto and wait (≤ 10 s) until it accepts connections."""
        if self._supervisor is not None:
            raise RuntimeError("EmbeddedBroker.start() called twice")
        binary = self._find_binary()
        self._account = broker_account()
        listed = [self.access.conf_dir] if self.access is not None else []
        prepare_broker_dir(self.data_dir, listed, self._account)
        if self.access is not None:
            try:
                self.access.apply()
            except AccessError as exc:
                raise BrokerError(f"cannot start the embedded broker: {exc}") from None
        write_private(self.conf_path, self._config(), file_owner(self.data_dir))
        _kill_orphan(self.pid_path, self.data_dir)
        if await _accepts(self.host, self.port):
            raise BrokerError(
                f"cannot start mosquitto: something already listens on {self.host}:{self.port}"
                " (a mosquitto left over from an earlier run?)"
            )
        self._stopping = False
        await self._spawn(binary)
        self._supervisor = asyncio.create_task(self._supervise(binary), name=f"mosquitto:{self.port}")
        log.info("mosquitto started on %s:%d (pid %s)", self.host, self.port, self.pid)

    async def stop(self) -> None:
        """Terminate mosquitto (SIGTERM, then SIGKILL after 5 s) and stop supervising it."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._terminate()

    # ----------------------------------------------------------------------------------- internals

    def _config(self) -> str:
        # Names checked against Mosquitto 2.0.11. message_size_limit is still accepted (2.0 prints a note
        # recommending max_packet_size); it is kept because it drops an oversize PUBLISH and keeps the
        # client connected, where max_packet_size disconnects the client.
        return (
            "# Written by the edge gateway on every start: edits are overwritten.\n"
            f"listener {self.port} {self.host}\n"
            "persistence false\n"
            f"max_queued_messages {self.max_queued_messages}\n"
            "max_inflight_messages 1000\n"
            f"message_size_limit {self.message_size_limit}\n"
            "set_tcp_nodelay true\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
            + (
                f"include_dir {self.access.conf_dir.relative_to(self.data_dir)}\n"
                if self.access is not None
                else "allow_anonymous true\n"
            )
        )

    def _find_binary(self) -> str:
        if self.binary is not None:
            if os.access(self.binary, os.X_OK) and Path(self.binary).is_file():
                return self.binary
            raise BrokerMissing(self.binary)
        found = shutil.which("mosquitto")
        if found:
            return found
        if os.access(_DEBIAN_PATH, os.X_OK):
            return _DEBIAN_PATH
        raise BrokerMissing(f"PATH and {_DEBIAN_PATH}")

    async def _spawn(self, binary: str) -> None:
        """Start one mosquitto process and wait until it accepts; raise BrokerError if it does not."""
        self._rotate_log()
        # stderr goes to a file, never to a pipe that could fill up and block mosquitto.
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with open(log_fd, "ab") as log_file:  # noqa: ASYNC230 - a local append, microseconds
            self._log_offset = log_file.seek(0, os.SEEK_END)
            proc = await asyncio.create_subprocess_exec(
                binary,
                "-c",
                _CONF_FILE,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,  # Ctrl-C reaches the gateway, which then stops the broker in order
                preexec_fn=_die_with_parent(),  # runs after the change of user: the signal survives it
                **launch_options(self.data_dir, self._account),
            )
        self._proc = proc
        self.pid_path.write_text(f"{proc.pid}\n")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT
        while True:
            if proc.returncode is not None:
                raise BrokerError(
                    f"mosquitto exited with code {proc.returncode} at start: {self._stderr_tail()}"
                )
            if await _accepts(self.host, self.port):
                return
            if loop.time() >= deadline:
                await self._terminate()
                raise BrokerError(
                    f"mosquitto did not accept connections on {self.host}:{self.port} within"
                    f" {_START_TIMEOUT:g} s: {self._stderr_tail()}"
                )
            await asyncio.sleep(0.05)

    async def _supervise(self, binary: str) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = _RESTART_MIN
        while True:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            if self._stopping:
                return
            if loop.time() - started >= _STABLE_AFTER:
                delay = _RESTART_MIN
            log.warning(
                "mosquitto (pid %d) exited unexpectedly with code %d; restarting: %s",
                proc.pid,
                code,
                self._stderr_tail() or "no output",
            )
            while True:
                await asyncio.sleep(delay)
                delay = min(_RESTART_MAX, delay * 2)
                try:
                    await self._spawn(binary)
                except (BrokerError, OSError) as exc:
                    log.debug("mosquitto restart failed: %s; next try in %.1f s", exc, delay)
                    continue
                break
            self.restarts += 1
            started = loop.time()
            log.info("mosquitto restarted on %s:%d (pid %s)", self.host, self.port, self.pid)

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), _STOP_GRACE)
        except TimeoutError:
            log.warning("mosquitto (pid %d) ignored SIGTERM for %g s; killing it", proc.pid, _STOP_GRACE)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        self.pid_path.unlink(missing_ok=True)

    def _rotate_log(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.log_path.stat().st_size >= _LOG_ROTATE_BYTES:
                self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))

    def _stderr_tail(self) -> str:
        """What this mosquitto run wrote to stderr, last 2 KB, on one line."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(self._log_offset, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        # Skip 2.0's start-up note about message_size_limit: it is noise next to a real error.
        lines = (line.strip() for line in text.splitlines())
        return " | ".join(line for line in lines if line and ": Note: " not in line)


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec hook giving mosquitto SIGTERM when the gateway dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG); its own session keeps it from Ctrl-C, so nothing else would stop it (reliability T01)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the gateway died between fork and prctl
            os._exit(1)

    return hook


_PR_SET_PDEATHSIG: Final = 1


def _runs_our_config(pid: int, broker_dir: Path) -> bool:
    """Whether process `pid` is a mosquitto of `broker_dir`: it names our config and runs in that directory
    (a pid file may be stale and its number recycled). PermissionError: it runs as another user."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if _CONF_FILE.encode() not in cmdline:
        return False
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == broker_dir.resolve()
    except FileNotFoundError:
        return False


def _kill_orphan(pid_path: Path, broker_dir: Path) -> None:
    """Stop a mosquitto an earlier run of this gateway left behind (the pid file names it; it must still run
    our config, so a recycled pid is left alone). Where PDEATHSIG is missing, this frees the port for the
    restart."""
    try:
        pid = int(pid_path.read_text().strip())
        ours = _runs_our_config(pid, broker_dir)
    except (OSError, ValueError):
        pid_path.unlink(missing_ok=True)
        return
    if ours:
        log.warning("stopping mosquitto pid %d left over from an earlier run", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + _STOP_GRACE
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:  # until the port is free
            time.sleep(0.02)
    pid_path.unlink(missing_ok=True)


def reload_broker(data_dir: Path) -> int | None:
    """Make the running embedded broker of `data_dir` re-read its password, ACL and access files (SIGHUP;
    connected clients stay connected). Returns its pid, or None when none runs. Works from another process
    (the CLI): the pid file is trusted only if that process runs mosquitto with this directory's config."""
    try:
        pid = int((data_dir / _PID_FILE).read_text().strip())
        if not _runs_our_config(pid, data_dir):
            return None  # a stale pid file: the number now belongs to another process
        os.kill(pid, signal.SIGHUP)
    except (ValueError, FileNotFoundError, ProcessLookupError):
        return None
    except PermissionError:
        raise BrokerError(
            f"the broker (pid {pid}) runs as another user: run this as the gateway's user, or send it SIGHUP"
        ) from None
    return pid


async def _accepts(host: str, port: int) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def apply_access(store: AccessStore, data_dir: Path, mode: str) -> str:
    """Render the broker's files from `store` and make the running embedded broker re-read them; returns
    what happened, for people (the CLI and the console). Raises BrokerError when it cannot be applied now.
    (The store wrote the files with each change.)"""
    if mode == "external":
        return (
            f"the bus is external: point its Mosquitto at password_file {store.passwd_path} and acl_file"
            f" {store.acl_path}, then reload it (kill -HUP); see docs/mqtt-access.md"
        )
    pid = reload_broker(data_dir / "broker")
    if pid is None:
        return "the gateway is not running: its broker applies this when it starts"
    return f"applied to the running broker (pid {pid}); connected clients stay connected"
