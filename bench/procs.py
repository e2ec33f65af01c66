"""Child processes of a benchmark: free ports, the bench broker, and a registry that kills everything on exit.

Every child runs in its own session (Ctrl-C reaches only the harness, which then stops the children in
order) and is registered in a `Children`; leaving its `with` block, normally or by an exception or Ctrl-C,
terminates whatever is still running (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import psutil

__all__ = ["BenchBroker", "Children", "ProcessCpu", "free_port", "peak_rss_mb", "wait_port"]

_DEBIAN_MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until 127.0.0.1:port accepts; raises RuntimeError if `proc` dies first or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


class Children:
    """The processes a benchmark started; all of them are stopped when the block ends."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()

    def spawn(
        self,
        argv: Sequence[str],
        *,
        log: Path,
        cwd: Path | None = None,
        stdout_pipe: bool = False,
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as log_file:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else log_file,
                stderr=log_file,
                start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 10.0) -> int:
        """SIGTERM, wait up to `grace` s, then SIGKILL; returns the exit code (negative: killed by signal)."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)
        return int(proc.returncode)

    def stop_all(self) -> None:
        for proc in reversed(list(self._procs)):
            self.stop(proc, grace=5.0)


class ProcessCpu:
    """CPU seconds (user + system, children excluded) of a set of processes, robust to their exit."""

    def __init__(self, pids: Sequence[int]) -> None:
        self._procs = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                self._procs.append(psutil.Process(pid))
        self._last: dict[int, float] = {}

    def seconds(self) -> float:
        total = 0.0
        for proc in self._procs:
            try:
                t = proc.cpu_times()
                self._last[proc.pid] = float(t.user + t.system)
            except psutil.Error:
                pass  # exited: keep its last reading
            total += self._last.get(proc.pid, 0.0)
        return total


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident set) of a running process, in MB (10^6 bytes)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.access(_DEBIAN_MOSQUITTO, os.X_OK):
        return _DEBIAN_MOSQUITTO
    raise RuntimeError("mosquitto not found on PATH or at /usr/sbin/mosquitto (apt-get install mosquitto)")


def mosquitto_version() -> str:
    try:
        out = subprocess.run(
            [mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return "unknown"
    first = out.splitlines()[0] if out else ""
    return first.removeprefix("mosquitto version ").strip() or "unknown"


class BenchBroker:
    """The benchmark's own Mosquitto on loopback, tuned for throughput, which the harness can stop and restart.

    Unlike the gateway's embedded broker it keeps state across a restart (`persistence true`, saved only
    when it stops): the bench subscriber holds a persistent session, so events the gateway publishes right
    after the broker comes back are queued for the subscriber even if the gateway reconnects first. The
    gateway itself connects with a clean session and sees an outage as it would any other: a dropped
    connection and refused connects until the broker is back.
    """

    def __init__(self, workdir: Path, children: Children, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.children = children
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            "# written by edge bench\n"
            f"user {getpass.getuser()}\n"  # as root, mosquitto would switch to 'mosquitto' and not write here
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            "persistence_file mosquitto.db\n"
            "autosave_interval 0\n"  # saved only when it stops (or on SIGUSR1)
            "max_inflight_messages 1000\n"
            "max_queued_messages 1000000\n"
            "max_queued_bytes 0\n"
            "message_size_limit 16777216\n"
            "set_tcp_nodelay true\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        self.proc = self.children.spawn([mosquitto_binary(), "-c", str(self.conf)], log=self.log)
        wait_port(self.port, 10.0, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.children.stop(self.proc, grace=10.0)
            self.proc = None

    def reset(self) -> None:
        """Stop, forget all state (sessions, retained messages), start again: a clean broker per run."""
        self.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "mosquitto.db").unlink()
        self.start()
