"""The gateway's own Mosquitto: a supervised child process serving the local bus on loopback, and on the
site's LAN through the listeners of `[[bus.listeners]]` (edge.bus.listeners: TLS, login required).

The SQLite outbox is the gateway's durability point: the publisher moves its cursor only on the broker's
PUBACK and replays the rest after any restart. The broker keeps what it acknowledged for local subscribers
(`persistence`, in `persistence/` of its directory): their persistent sessions, subscriptions and queued
messages, saved every `autosave_interval` and when it stops (SIGTERM, which it also gets when the gateway
dies). The config is written on every start, so edits to it are lost.

Mosquitto runs in its directory, with a minimal environment and, when the gateway is root, under an
unprivileged account (edge.bus.broker_process). Every path in its config is relative to that directory: the
listeners' certificates and keys are copied into `tls/` at each start (the operator's files stay where they
are, and may be unreadable to the broker's account).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from edge.bus.access import AccessError, AccessStore
from edge.bus.broker_process import (
    BrokerAccount,
    broker_account,
    broker_environment,
    enter,
    file_owner,
    prepare_broker_dir,
    write_private,
)
from edge.bus.listeners import OWN, Listener, certificate_problems, mosquitto_lines, port_problems
from edge.config.models import is_loopback
from edge.sdk.errors import EdgeError

__all__ = [
    "BrokerError",
    "BrokerMissing",
    "EmbeddedBroker",
    "Persistence",
    "apply_access",
    "persistence_file",
    "reload_broker",
    "running_broker",
]

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
_PERSISTENCE_DIR: Final = "persistence"  # in the broker's directory, the broker's own (it writes there)
_PERSISTENCE_FILE: Final = "mosquitto.db"
_TLS_DIR: Final = "tls"  # the listeners' certificates and keys, copied for the broker's account
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
        if not is_loopback(host):
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
        if access is not None and access.dir != data_dir:
            raise ValueError(
                f"the broker's access files must be in its directory {data_dir}, not {access.dir}"
            )
        self.access = access  # per-tenant users and ACLs (edge.bus.access); None: anonymous only
        self.listeners = [Listener(OWN, host, port), *listeners]
        self.persistence = persistence  # None: nothing kept across restarts (tests, benchmarks)
        self.on_start: list[Callable[[], None]] = []  # called after every (re)start, before clients connect
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
        if any(item.tls for item in self.listeners):
            listed.append(self.data_dir / _TLS_DIR)
        prepare_broker_dir(self.data_dir, listed, self._account)
        if self.access is not None:
            try:
                self.access.apply()
            except AccessError as exc:
                raise BrokerError(f"cannot start the embedded broker: {exc}") from None
        missing = certificate_problems(self.listeners)
        if missing:
            raise BrokerError("cannot start the embedded broker: " + "; ".join(missing))
        self._prepare_files()
        _kill_orphan(self.pid_path, self.data_dir)
        taken = port_problems(self.listeners)
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

    def _prepare_files(self) -> None:
        """Write the config and what it names for the broker's account: copies of the listeners'
        certificates and keys (rewritten when their source changed) and the persistence directory."""
        owner = file_owner(self.data_dir)
        _copy_certificates(self.listeners, self.data_dir, owner)
        if self.persistence is not None:
            _private_directory(self.data_dir / _PERSISTENCE_DIR, owner)
            _give_file(persistence_file(self.data_dir), owner)  # one restored from a backup is root's
        write_private(self.conf_path, self._config(), owner)

    def _config(self) -> str:
        return (
            "# Written by the edge gateway on every start: edits are overwritten.\n"
            + mosquitto_lines(_as_copied(item) for item in self.listeners)
            + self._limits_config()
            + _persistence_config(self.persistence)
            + "log_dest stderr\nlog_type error\nlog_type warning\n"
            + (
                f"include_dir {self.access.conf_dir.relative_to(self.data_dir)}\n"
                if self.access is not None
                else "allow_anonymous true\n"
            )
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
        self._prepare_files()
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
                env=broker_environment(),
                preexec_fn=_child_hook(self.data_dir, self._account),
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


def persistence_file(broker_dir: Path) -> Path:
    """Where the broker saves sessions, subscriptions, queued and retained messages (`persistence`). It
    writes a new file and renames it over this one, so a copy read at any time is one whole save."""
    return broker_dir / _PERSISTENCE_DIR / _PERSISTENCE_FILE


def _persistence_config(persistence: Persistence | None) -> str:
    if persistence is None:
        return "persistence false\n"
    hours = max(1, math.ceil(persistence.session_expiry / 3600))  # Mosquitto counts in h/d/w/m/y
    return (
        "persistence true\n"
        f"persistence_location {_PERSISTENCE_DIR}/\n"  # relative: to the broker's working directory
        f"persistence_file {_PERSISTENCE_FILE}\n"
        f"autosave_interval {max(1, round(persistence.autosave_interval))}\n"
        f"persistent_client_expiration {hours}h\n"
        "sys_interval 1\n"  # $SYS/broker/clients/disconnected: the sessions still to come back (SessionGate)
    )


def _child_hook(broker_dir: Path, account: BrokerAccount | None) -> Callable[[], None]:
    """The mosquitto child's preexec hook: its directory and account (`enter`), then a parent-death signal
    giving mosquitto SIGTERM when the gateway dies, even by SIGKILL (Linux PR_SET_PDEATHSIG); its own session
    keeps it from Ctrl-C, so nothing else would stop it (reliability T01). In that order: the kernel clears the
    parent-death signal on a change of credentials."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    parent = os.getpid()  # both looked up before the fork: the child only calls them

    def hook() -> None:
        enter(broker_dir, account)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:  # the gateway died between fork and prctl
                os._exit(1)

    return hook


_PR_SET_PDEATHSIG: Final = 1


def _copied_name(listener: Listener, kind: str) -> Path:
    return Path(_TLS_DIR) / f"{listener.name}.{kind}.pem"


def _as_copied(listener: Listener) -> Listener:
    """The listener as the broker's config names it: its TLS files by their copies' relative paths."""
    if not listener.tls:
        return listener
    return replace(
        listener,
        certfile=_copied_name(listener, "cert"),
        keyfile=_copied_name(listener, "key"),
        cafile=_copied_name(listener, "ca") if listener.cafile is not None else None,
    )


def _certificate_copies(listeners: Sequence[Listener]) -> list[tuple[Path, Path]]:
    """(operator's file, copy relative to the broker's directory) for every TLS file of `listeners`."""
    copies = []
    for item in listeners:
        copied = _as_copied(item)
        for source, copy in ((item.certfile, copied.certfile), (item.keyfile, copied.keyfile)):
            if source is not None and copy is not None:
                copies.append((source, copy))
        if item.cafile is not None and copied.cafile is not None:
            copies.append((item.cafile, copied.cafile))
    return copies


def _copy_certificates(
    listeners: Sequence[Listener], broker_dir: Path, owner: tuple[int, int] | None
) -> None:
    """Copy every TLS file of `listeners` into the broker's `tls/`, and delete the copies no listener names
    any more (a listener removed from the configuration: its key goes too)."""
    copies = _certificate_copies(listeners)
    for source, copy in copies:
        _copy_private(source, broker_dir / copy, owner)
    kept = {broker_dir / copy for _, copy in copies}
    tls_dir = broker_dir / _TLS_DIR
    for stale in sorted(tls_dir.iterdir()) if tls_dir.is_dir() else []:
        if stale not in kept:
            stale.unlink()


def _copy_private(source: Path, copy: Path, owner: tuple[int, int] | None) -> None:
    """Copy `source` 0600 for the broker's account, unless the copy already holds the same bytes for it."""
    text = source.read_text()
    with contextlib.suppress(OSError):
        if copy.read_text() == text and (owner is None or copy.stat().st_uid == owner[0]):
            return
    write_private(copy, text, owner)


def _give_file(path: Path, owner: tuple[int, int] | None) -> None:
    """Hand an existing regular file (never a link, never one with other names) to the broker's account."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if owner is not None and stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and info.st_uid != owner[0]:
        os.chown(path, *owner, follow_symlinks=False)


def _private_directory(path: Path, owner: tuple[int, int] | None) -> None:
    """A directory only the broker's account may enter (it writes there); its parent is root's, so no one
    else can have swapped it for a link."""
    path.mkdir(mode=0o700, exist_ok=True)
    if owner is not None:
        os.chown(path, *owner, follow_symlinks=False)
    os.chmod(path, 0o700, follow_symlinks=False)


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


def running_broker(broker_dir: Path) -> int | None:
    """The pid of the embedded broker running in `broker_dir`, or None. The pid file is trusted only if that
    process runs mosquitto with this directory's config (else the number was recycled). PermissionError: it
    runs as another user (root's broker, this being another user's CLI)."""
    try:
        pid = int((broker_dir / _PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _runs_our_config(pid, broker_dir) else None


def reload_broker(broker_dir: Path) -> int | None:
    """Make the running embedded broker of `broker_dir` re-read its password, ACL and access files (SIGHUP;
    connected clients stay connected). Returns its pid, or None when none runs. Works from another process
    (the CLI)."""
    try:
        pid = running_broker(broker_dir)
        if pid is None:
            return None
        # a broker still starting would die of an uncaught SIGHUP
        deadline = time.monotonic() + _START_TIMEOUT
        while not _catches_sighup(pid) and _running(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return None
    except PermissionError:
        raise BrokerError(
            f"the broker of {broker_dir} runs as another user: run this as the gateway's user, or send it SIGHUP"
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
