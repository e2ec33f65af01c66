"""What every peer gateway run shares: its result, an MQTT counter, the measured window, its process tree.

A peer (ThingsBoard IoT Gateway, Node-RED) is measured exactly as ours is charged: user + system CPU of its
whole process tree over a window of whole poll periods, peak RSS (VmHWM) of that tree, and sample -> receipt
latency of every point a loopback MQTT client receives from the bench broker. Each peer module says how its
messages look (`TelemetryCounter.count`) and how it is installed, configured and started.

`local_broker` and `bank_simulator` give a peer's quick check (`python -m bench.peer_...`) and its tests a
Mosquitto and Modbus bank devices of their own; inside `edge bench` the harness's broker and fleet are used.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

__all__ = [
    "PEERS",
    "PeerResult",
    "PeerRun",
    "PeerSpec",
    "TelemetryCounter",
    "Window",
    "bank_simulator",
    "connections_to",
    "free_port",
    "local_broker",
    "log_summary",
    "measure_window",
    "memory_mb",
    "peer_result",
    "process_family",
    "quick_check",
    "quick_check_parser",
    "run_measured",
    "sleep_alive",
    "stop_group",
    "tree_cpu_seconds",
    "weighted_percentile",
]

# RSS growth that marks a collapse: a peer that falls behind keeps queueing reads or messages and grows
# ~1-2 MB/s; one that keeps up is flat (< 0.05 MB/s) on this benchmark
FALLING_BEHIND_MB_S = 0.3


@dataclass
class PeerResult:
    name: str  # e.g. "thingsboard-gateway 3.8.5 (memory storage)"
    offered_points_per_s: float
    delivered_points_per_s: float
    cpu_us_per_point: float
    peak_rss_mb: float
    p50_latency_ms: float | None
    p99_latency_ms: float | None
    notes: str


@dataclass(frozen=True)
class PeerSpec:
    """A peer the compare scenario can run: `module.function(**run arguments, **options)` -> PeerResult."""

    label: str
    module: str
    function: str
    options: dict[str, Any] = field(default_factory=dict)

    def run(self, **arguments: Any) -> PeerResult:
        runner = getattr(importlib.import_module(self.module), self.function)
        result = runner(**arguments, **self.options)
        assert isinstance(result, PeerResult)
        return result


# Every peer `edge bench compare` knows, by the name scenarios use.
PEERS: dict[str, PeerSpec] = {
    "thingsboard-memory": PeerSpec(
        "ThingsBoard memory", "bench.peer_thingsboard", "run_thingsboard", {"storage": "memory"}
    ),
    "thingsboard-sqlite": PeerSpec(
        "ThingsBoard sqlite", "bench.peer_thingsboard", "run_thingsboard", {"storage": "sqlite"}
    ),
    "node-red": PeerSpec("Node-RED", "bench.peer_nodered", "run_nodered"),
}


class TelemetryCounter:
    """A paho client on the bench broker counting a peer's points; paho calls `_on_message` on its thread.

    Subclasses implement `count(topic, body, now_ms)`: the points in one message and (latency ms, points)
    pairs; they may also answer requests (`handle`) on other topics.
    """

    def __init__(self, broker_port: int, topics: list[tuple[str, int]], client_id: str) -> None:
        self._port = broker_port
        self._topics = topics
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.points = 0
        self.messages = 0
        self.malformed = 0
        self.first_point_at: float | None = None
        self._recording = False
        self._arrived = threading.Event()
        self._latencies: list[tuple[float, int]] = []  # (latency ms, points with that sample time)
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.on_connect = lambda client, *_args: client.subscribe(self._topics)
        self._client.on_subscribe = lambda *_args: self._subscribed.set()
        self._client.on_message = self._on_message

    def start(self, timeout: float = 10.0) -> None:
        self._client.connect("127.0.0.1", self._port)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise RuntimeError(f"no MQTT subscription on 127.0.0.1:{self._port} within {timeout:.0f} s")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def wait_for_telemetry(self, timeout: float) -> bool:
        """Wait for the next telemetry message (True) or `timeout` seconds (False)."""
        self._arrived.clear()
        return self._arrived.wait(timeout)

    def record(self, on: bool) -> None:
        with self._lock:
            self._recording = on

    def snapshot(self) -> int:
        with self._lock:
            return self.points

    def latencies(self) -> list[tuple[float, int]]:
        with self._lock:
            return list(self._latencies)

    def count(self, topic: str, body: Any, now_ms: float) -> tuple[int, list[tuple[float, int]]] | None:
        """(points, [(latency ms, points)]) of one telemetry message; None if `topic` is not telemetry."""
        raise NotImplementedError

    def handle(self, client: mqtt.Client, topic: str, body: Any) -> None:
        """A message that is not telemetry (e.g. an RPC the peer sends its platform); ignored by default."""

    def _on_message(self, client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now_ms = time.time() * 1000.0
        try:  # an exception escaping a paho callback would end its network thread
            body = orjson.loads(msg.payload)
            counted = self.count(msg.topic, body, now_ms)
            if counted is None:
                self.handle(client, msg.topic, body)
                return
            total, batch = counted
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError, KeyError):
            with self._lock:
                self.malformed += 1
            return
        with self._lock:
            self.messages += 1
            self.points += total
            if total and self.first_point_at is None:
                self.first_point_at = time.monotonic()
            if self._recording:
                self._latencies.extend(batch)
        self._arrived.set()


def weighted_percentile(samples: list[tuple[float, int]], q: float) -> float | None:
    """The q-quantile (0..1) of values each standing for n points."""
    total = sum(n for _, n in samples)
    if total == 0:
        return None
    rank, seen = q * (total - 1), 0
    ordered = sorted(samples)
    for value, n in ordered:
        seen += n
        if seen > rank:
            return value
    return ordered[-1][0]


# --- the peer's process tree ------------------------------------------------------------------


def process_family(proc: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return [proc, *proc.children(recursive=True)]
    return [proc]


def tree_cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU of the process and its live children, plus children it already reaped."""
    total = 0.0
    for p in process_family(proc):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system + (t.children_user + t.children_system if p is proc else 0.0)
    return total


def busy_share(before: Any, after: Any) -> float:
    """Share of all cores' time spent busy between two `psutil.cpu_times()` samples."""
    total = sum(after) - sum(before)
    idle = (after.idle + after.iowait) - (before.idle + before.iowait)
    return (total - idle) / total if total > 0 else 0.0


def _status_kb(pid: int, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def memory_mb(proc: psutil.Process, field: str) -> float:
    """A /proc status field (VmRSS, VmHWM, in KiB) summed over the process tree, in MB (10^6 bytes, as ours)."""
    return sum(_status_kb(p.pid, field) for p in process_family(proc)) * 1024 / 1e6


def stop_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM to the peer's process group (it runs in its own session), SIGKILL after `grace` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)


def sleep_alive(proc: subprocess.Popen[bytes], seconds: float, why_dead: Callable[[], str]) -> None:
    """Sleep, checking that the peer still runs; RuntimeError with `why_dead()` if it exits."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}: {why_dead()}")
        time.sleep(min(0.2, left))


@dataclass(frozen=True)
class Window:
    seconds: float
    points: int
    cpu_s: float
    peak_rss_mb: float
    children: int
    notes: str


def measure_window(
    proc: subprocess.Popen[bytes],
    counter: TelemetryCounter,
    duration: float,
    poll_interval: float,
    why_dead: Callable[[], str],
) -> Window:
    """Measure a whole number of poll periods, starting half a period after a telemetry message.

    A peer sends each poll's values in bursts; a window edge that fell on a burst would count a whole poll
    more or less (5 % in 20 s at a 1 s poll). Mid-phase edges count each burst once.
    """
    periods = max(1, round(duration / poll_interval))
    if counter.wait_for_telemetry(timeout=2 * poll_interval + 5.0):
        sleep_alive(proc, poll_interval / 2, why_dead)
    duration = periods * poll_interval
    ps = psutil.Process(proc.pid)
    rss0, cpu0 = memory_mb(ps, "VmRSS"), tree_cpu_seconds(ps)
    points0, machine0 = counter.snapshot(), psutil.cpu_times()
    t0 = time.monotonic()
    counter.record(True)
    sleep_alive(proc, duration, why_dead)
    cpu1, points1, machine1 = tree_cpu_seconds(ps), counter.snapshot(), psutil.cpu_times()
    elapsed = time.monotonic() - t0
    counter.record(False)
    rss1, peak, children = memory_mb(ps, "VmRSS"), memory_mb(ps, "VmHWM"), len(process_family(ps)) - 1
    cpu = cpu1 - cpu0
    notes = (
        f"window {elapsed:.1f} s; CPU {cpu / elapsed:.0%} of one core (user+system of its process"
        f"{f' and {children} children' if children else '; it had no child processes'}); "
        f"whole machine {busy_share(machine0, machine1):.0%} busy on {psutil.cpu_count()} cores "
        "(everything: simulators, broker, this counter, other jobs); "
        f"RSS {rss0:.0f} -> {rss1:.0f} MB in the window ({(rss1 - rss0) / elapsed:+.2f} MB/s)"
    )
    if (rss1 - rss0) / elapsed > FALLING_BEHIND_MB_S:
        notes += " - falling behind: its reads or messages pile up"
    return Window(elapsed, points1 - points0, cpu, peak, children, notes)


@dataclass(frozen=True)
class PeerRun:
    """How to start one peer process and what tells whether it works."""

    what: str  # "ThingsBoard", "Node-RED": for messages
    argv: list[str]
    cwd: Path
    stdout: Path  # the peer's stdout and stderr
    why_dead: Callable[[], str]  # a summary of its logs, for errors
    env: dict[str, str] | None = None
    startup_timeout: float = 120.0
    stop_grace: float = 10.0


def run_measured(
    run: PeerRun,
    counter: TelemetryCounter,
    *,
    warmup: float,
    duration: float,
    poll_interval: float,
    device_ports: set[int],
) -> tuple[Window, int]:
    """Start the peer, wait for its first telemetry, warm up, measure a window, stop it.

    Returns the window and how many TCP connections the peer's tree held to `device_ports` at its end.
    """
    counter.start()
    try:
        with open(run.stdout, "wb") as out:
            proc = subprocess.Popen(
                run.argv,
                cwd=run.cwd,
                env=run.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop_group reaches its children
            )
        try:
            deadline = time.monotonic() + run.startup_timeout
            while counter.first_point_at is None and time.monotonic() < deadline:
                sleep_alive(proc, 0.2, run.why_dead)
            if counter.first_point_at is None:
                raise RuntimeError(
                    f"no telemetry from {run.what} within {run.startup_timeout:.0f} s; {run.why_dead()}"
                )
            sleep_alive(proc, warmup, run.why_dead)
            window = measure_window(proc, counter, duration, poll_interval, run.why_dead)
            connections = connections_to(psutil.Process(proc.pid), device_ports)
        finally:
            stop_group(proc, run.stop_grace)
    finally:
        counter.stop()
    return window, connections


def log_summary(what: str, paths: list[Path], error_marks: tuple[str, ...]) -> str:
    """How many lines the peer logged, how many look like errors (contain a mark), and the last of those."""
    lines: list[str] = []
    for path in paths:
        with contextlib.suppress(OSError):
            lines += [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if any(mark in ln for mark in error_marks)]
    summary = f"{what} logged {len(lines)} lines at WARNING+ ({len(errors)} errors)"
    return summary + (f", last error: {errors[-1][-200:]}" if errors else "")


def connections_to(proc: psutil.Process, ports: set[int]) -> int:
    """TCP connections of the process tree to any of `ports` (the simulated devices)."""
    count = 0
    for p in process_family(proc):
        with contextlib.suppress(psutil.Error):
            count += sum(1 for c in p.net_connections("tcp") if c.raddr and c.raddr.port in ports)
    return count


def peer_result(
    name: str, offered: float, window: Window, counter: TelemetryCounter, notes: str
) -> PeerResult:
    samples = counter.latencies()
    if counter.malformed:
        notes += f"; {counter.malformed} MQTT messages could not be parsed"
    return PeerResult(
        name=name,
        offered_points_per_s=offered,
        delivered_points_per_s=window.points / window.seconds,
        cpu_us_per_point=window.cpu_s * 1e6 / window.points if window.points else float("inf"),
        peak_rss_mb=window.peak_rss_mb,
        p50_latency_ms=weighted_percentile(samples, 0.50),
        p99_latency_ms=weighted_percentile(samples, 0.99),
        notes=notes,
    )


# --- a broker and a bank simulator for the quick checks and the tests -------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not listening on 127.0.0.1:{port} within {timeout:.0f} s")


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def local_broker(workdir: Path, mosquitto: str = "/usr/sbin/mosquitto") -> Iterator[int]:
    """A Mosquitto on a free loopback port, set up as the benchmark wants it; yields the port."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 1000000\nmax_inflight_messages 1000\n"
    )
    proc = subprocess.Popen(
        [mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_listening(port, proc, "mosquitto")
        yield port
    finally:
        _terminate(proc)


@contextlib.contextmanager
def bank_simulator(
    devices: int, registers: int, log_dir: Path, per_process: int = 10
) -> Iterator[list[tuple[str, int, int]]]:
    """`devices` simulated banks, `per_process` to a `simulators.modbus_bank` process (one port each,
    since one pymodbus server process answers only ~8k requests/s); yields (host, port, unit) per device.
    Each process's output goes to `log_dir/modbus_bank_<port>.log`."""
    procs: list[subprocess.Popen[bytes]] = []
    found: list[tuple[str, int, int]] = []
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        for first in range(0, devices, per_process):
            n, port = min(per_process, devices - first), free_port()
            cmd = [sys.executable, "-m", "simulators.modbus_bank", "--port", str(port)]
            cmd += ["--devices", str(n), "--registers", str(registers)]
            with open(log_dir / f"modbus_bank_{port}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        cmd, cwd=Path(__file__).resolve().parents[1], stdout=log, stderr=subprocess.STDOUT
                    )
                )
            _wait_listening(port, procs[-1], "modbus_bank simulator")
            found += [("127.0.0.1", port, unit) for unit in range(1, n + 1)]
        yield found
    finally:
        for proc in procs:
            _terminate(proc)


def quick_check_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every peer's `python -m bench.peer_...` quick check takes; add the peer's own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--registers", type=int, default=50)
    p.add_argument("--poll", type=float, default=1.0, help="poll interval, seconds")
    p.add_argument("--duration", type=float, default=20.0, help="measured window, seconds")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--per-process", type=int, default=10, help="simulated devices per simulator process")
    return p


def quick_check(args: argparse.Namespace, run: Callable[..., PeerResult], **options: Any) -> None:
    """Run a peer once on its own Mosquitto and bank simulators; print its result as JSON."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edge-bench-peer-"))
    with (
        local_broker(workdir) as broker_port,
        bank_simulator(args.devices, args.registers, workdir, args.per_process) as devices,
    ):
        result = run(
            workdir=workdir,
            broker_port=broker_port,
            devices=devices,
            registers=args.registers,
            poll_interval=args.poll,
            duration=args.duration,
            warmup=args.warmup,
            **options,
        )
    print(json.dumps(asdict(result), indent=2))
    print(f"workdir: {workdir}", file=sys.stderr)
