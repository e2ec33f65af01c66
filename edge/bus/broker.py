"""The gateway's own Mosquitto: a supervised child process serving the local bus on loopback, and on the
site's LAN through the listeners of `[[bus.listeners]]` (edge.bus.listeners: TLS, login required).

The SQLite outbox is the gateway's durability point: the publisher moves its cursor only on the broker's
PUBACK and replays the rest after any restart. The broker keeps what it acknowledged for local subscribers
(`persistence`, in the data directory): their persistent sessions, subscriptions and queued messages, saved
every `autosave_interval` and when it stops (SIGTERM, which it also gets when the gateway dies). The config
is written on every start, so edits to it are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import math
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge.bus.access import AccessStore
from edge.bus.listeners import OWN, Listener, certificate_problems, mosquitto_lines, port_problems
from edge.sdk.errors import EdgeError

__all__ = ["BrokerError", "BrokerMissing", "EmbeddedBroker", "Persistence", "reload_broker", "running_broker"]

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
_PERSISTENCE_FILE: Final = "mosquitto.db"
_RELOAD_PAUSE: Final = 0.1  # seconds for Mosquitto to apply a SIGHUP (one turn of its loop)


class BrokerError(EdgeError):
    """The embedded broker could not be started."""


class BrokerMissing(BrokerError):
    """No mosquitto binary was found."""

    def __init__(self, looked_at: str) -> None:
        self.looked_at = looked_at
        super().__init__(f"mosquitto not found on PATH ({looked_at}); {_INSTALL_HINT}")


@dataclass(frozen=True, slots=True)
class Persistence:
    """What the broker keeps across restarts for local subscribers' persistent sessions ([bus] keys)."""

    autosave_interval: float = 60.0
    session_expiry: float = 7 * 86_400.0
    max_queued_bytes: int = 64 << 20  # per client; 0: no limit


class EmbeddedBroker:
    """Starts Mosquitto on ``host:port`` (plus `listeners`) and restarts it (0.5 s -> 10 s backoff) if it dies."""

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
        listeners: Sequence[Listener] = (),
        persistence: Persistence | None = None,
    ) -> None:
        if not _is_loopback(host):
            # allow_anonymous is only acceptable while nothing but this machine can reach the listener.
            raise ValueError(
                f"the embedded broker's own listener stays on loopback, got host {host!r}:"
                " LAN clients connect through [[bus.listeners]]"
            )
        if listeners and access is None:
            raise ValueError("LAN listeners need the access files (tenant logins): pass an AccessStore")
        self.port = port
        self.host = host
        self.data_dir = data_dir
        self.max_queued_messages = max_queued_messages
        self.message_size_limit = message_size_limit
        self.binary = binary
        self.access = access  # per-tenant users and ACLs (edge.bus.access); None: anonymous only
        self.listeners = [Listener(OWN, host, port), *listeners]
        self.persistence = persistence  # None: nothing kept across restarts (tests, benchmarks)
        self.on_start: list[Callable[[], None]] = []  # called after every (re)start, before clients connect
        self.restarts = 0
        self.conf_path = data_dir / "mosquitto.conf"
        self.log_path = data_dir / "mosquitto.log"
        self.pid_path = data_dir / "mosquitto.pid"
        self._proc: asyncio.subprocess.Process | None = None
        self._log_offset = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def start(self) -> None:
        """Write the config, spawn mosquitto and wait (≤ 10 s) until it accepts connections."""
        if self._supervisor is not None:
            raise RuntimeError("EmbeddedBroker.start() called twice")
        binary = self._find_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.access is not None:
            self.access.apply()
        self.conf_path.write_text(self._config())
        _kill_orphan(self.pid_path, self.conf_path)
        taken = certificate_problems(self.listeners) + port_problems(self.listeners)
        if taken:
            raise BrokerError("cannot start the embedded broker: " + "; ".join(taken))
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
        return (
            "# Written by the edge gateway on every start: edits are overwritten.\n"
            + mosquitto_lines(self.listeners)
            + self._limits_config()
            + _persistence_config(self.persistence, self.data_dir)
            + "log_dest stderr\nlog_type error\nlog_type warning\n"
            + (
                f"include_dir {self.access.conf_dir}\n"
                if self.access is not None
                else "allow_anonymous true\n"
            )
            + _same_user()
        )

    def _limits_config(self) -> str:
        # Names checked against Mosquitto 2.0.11. message_size_limit is still accepted (2.0 prints a note
        # recommending max_packet_size); it is kept because it drops an oversize PUBLISH and keeps the
        # client connected, where max_packet_size disconnects the client.
        queued_bytes = self.persistence.max_queued_bytes if self.persistence is not None else 0
        return (
            f"max_queued_messages {self.max_queued_messages}\n"
            f"max_queued_bytes {queued_bytes}\n"
            "max_inflight_messages 1000\n"
            f"message_size_limit {self.message_size_limit}\n"
            "set_tcp_nodelay true\n"
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
        with open(self.log_path, "ab") as log_file:  # noqa: ASYNC230 - a local append, microseconds
            self._log_offset = log_file.seek(0, os.SEEK_END)
            proc = await asyncio.create_subprocess_exec(
                binary,
                "-c",
                str(self.conf_path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,  # Ctrl-C reaches the gateway, which then stops the broker in order
                preexec_fn=_die_with_parent(),
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
                await self._apply_acls_to_restored_sessions(proc)
                for hook in self.on_start:
                    hook()
                return
            if loop.time() >= deadline:
                await self._terminate()
                raise BrokerError(
                    f"mosquitto did not accept connections on {self.host}:{self.port} within"
                    f" {_START_TIMEOUT:g} s: {self._stderr_tail()}"
                )
            await asyncio.sleep(0.05)

    async def _apply_acls_to_restored_sessions(self, proc: asyncio.subprocess.Process) -> None:
        """Mosquitto 2.0 restores persistent sessions from disk without their users' ACLs (it looks them up
        when a client connects), so it queues nothing for an offline session until its client is back: every
        event published meanwhile would be lost to it. A SIGHUP applies the ACLs to every session, restored
        ones included; it goes before the gateway connects and publishes (Mosquitto handles it at its next
        loop turn, hence the pause)."""
        if self.persistence is None or self.access is None:
            return
        # Its listeners accept (in the kernel's backlog) before it installs its signal handlers, and an
        # unhandled SIGHUP would end it: wait until it catches SIGHUP.
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT
        while not _catches_sighup(proc.pid):
            if proc.returncode is not None or asyncio.get_running_loop().time() >= deadline:
                return
            await asyncio.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(_RELOAD_PAUSE)

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


def _persistence_config(persistence: Persistence | None, data_dir: Path) -> str:
    if persistence is None:
        return "persistence false\n"
    hours = max(1, math.ceil(persistence.session_expiry / 3600))  # Mosquitto counts in h/d/w/m/y
    return (
        "persistence true\n"
        f"persistence_location {data_dir}/\n"
        f"persistence_file {_PERSISTENCE_FILE}\n"
        f"autosave_interval {max(1, round(persistence.autosave_interval))}\n"
        f"persistent_client_expiration {hours}h\n"
        "sys_interval 1\n"  # $SYS/broker/clients/disconnected: the sessions still to come back (SessionGate)
    )


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


def _kill_orphan(pid_path: Path, conf_path: Path) -> None:
    """Stop a mosquitto an earlier run of this gateway left behind (the pid file names it; the command line
    must still name our config, so a recycled pid is left alone). Where PDEATHSIG is missing, this frees the
    port for the restart."""
    try:
        pid = int(pid_path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        pid_path.unlink(missing_ok=True)
        return
    if str(conf_path).encode() in cmdline:
        # SIGTERM first: Mosquitto then saves its sessions and queued messages (persistence) before it exits
        log.warning("stopping mosquitto pid %d left over from an earlier run", pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + _STOP_GRACE
            while _running(pid) and time.monotonic() < deadline:  # until the port is free
                time.sleep(0.02)
            if not _running(pid):
                break
    pid_path.unlink(missing_ok=True)


def _catches_sighup(pid: int) -> bool:
    """Whether the process has a SIGHUP handler (bit 0 of SigCgt in /proc/<pid>/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) & (1 << (signal.SIGHUP - 1)))


def _running(pid: int) -> bool:
    """Alive and not a zombie (a dead child of ours keeps its /proc entry until reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _same_user() -> str:
    """Started as root, Mosquitto switches to the `mosquitto` user, which cannot read the 0600 password and
    ACL files the gateway writes: keep it under the gateway's own user instead."""
    if os.geteuid() != 0:
        return ""
    return f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"


def running_broker(data_dir: Path) -> int | None:
    """The pid of the embedded broker running on `data_dir`, or None. The pid file is trusted only if that
    process runs mosquitto with this directory's config (else the number was recycled)."""
    try:
        pid = int((data_dir / _PID_FILE).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if str(data_dir / "mosquitto.conf").encode() in cmdline else None


def reload_broker(data_dir: Path) -> int | None:
    """Make the running embedded broker of `data_dir` re-read its password, ACL and access files (SIGHUP;
    connected clients stay connected). Returns its pid, or None when none runs. Works from another process
    (the CLI)."""
    pid = running_broker(data_dir)
    if pid is None:
        return None
    deadline = time.monotonic() + _START_TIMEOUT  # a broker still starting would die of an uncaught SIGHUP
    while not _catches_sighup(pid) and _running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return None
    except PermissionError:
        raise BrokerError(
            f"the broker (pid {pid}) runs as another user: run this as the gateway's user, or send it SIGHUP"
        ) from None
    return pid


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _accepts(host: str, port: int) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
