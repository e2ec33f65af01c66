"""ThingsBoard IoT Gateway as the benchmark's peer: install it, configure it, run it, measure it.

The peer is measured on the same simulator and broker as our gateway, so the two figures compare.
The broker plays the ThingsBoard platform: an in-process paho client (`_Platform`) answers the
gateway's `getSessionLimits` RPC (without that answer, and with remote configuration off, TB sends no
telemetry at all) and counts the points arriving on `v1/gateway/telemetry`.

How TB is set up (all files under `workdir`, filled in from the JSON in `peer_thingsboard_templates/`):
- `config/tb_gateway.json`: platform = 127.0.0.1:<broker_port> with an access token, remote
  configuration and remote shell off, statistics and device-activity checks off, the stock report
  strategy (ON_RECEIVED: every read value is sent), memory or SQLite storage (`tb_storage/`).
- `config/modbus.json`: one entry per device; each register is its own `16uint` timeseries key (TB's
  usual shape, and one read request per key: that is how TB polls).
- `config/logs.json`: WARNING and above to files in `logs/`; TB's stdout/stderr go to `tb_stdout.log`.
  The `pymodbus` logger is at ERROR (as under TB's stock root level): pymodbus 3.9.2 warns on every
  conversion that TB's decoder is deprecated, and that file write per poll is not TB's work.

TB keys its Modbus connections by the host *string* and port, so devices that share a simulator
port would share one connection and be polled one request at a time. To give each device its own
connection (TB's best figure) the n-th device on a shared host:port gets another spelling of the
same IPv4 address (`127.0.0.1`, `0x07f.0.0.1`, `0x007f.0.0.1`, ...): the resolver maps them to one
address, TB sees distinct keys. `share_connections=True` turns this off to measure the shared case.

Two outbound side effects of TB are contained: its update checker (an HTTPS POST on start) is pointed
at a dead local proxy, and its Modbus connector's start-time `pip install` of pymodbus never runs
because the exact pymodbus it demands is installed with it.

Run `python -m bench.peer_thingsboard --devices 20 --registers 50 --poll 1.0 --duration 20` for a quick
check: it starts its own Mosquitto and `simulators.modbus_bank` processes (10 devices to a port).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

__all__ = [
    "TB_PYMODBUS",
    "TB_VERSION",
    "PeerResult",
    "bank_simulator",
    "default_venv_dir",
    "ensure_thingsboard_installed",
    "local_broker",
    "run_thingsboard",
]

TB_VERSION = "3.8.5"
# TB's Modbus connector demands exactly this pymodbus and pip-installs it at start when it differs.
TB_PYMODBUS = "3.9.2"
_TB_REQUIREMENTS = (
    f"thingsboard-gateway=={TB_VERSION}",
    f"pymodbus=={TB_PYMODBUS}",
    "pyserial==3.5",  # imported by the Modbus connector even for TCP
    "pyserial-asyncio==0.6",
)
ACCESS_TOKEN = "edge-bench-peer"
_TELEMETRY_TOPIC = "v1/gateway/telemetry"
_RPC_REQUEST_TOPIC = "v1/devices/me/rpc/request/+"
_RPC_RESPONSE_PREFIX = "v1/devices/me/rpc/response/"
_NO_LIMIT = "0:0,"  # TB's notation for "no rate limit"
_SESSION_LIMITS = {
    "maxPayloadSize": 65536,
    "maxInflightMessages": 1000,
    "rateLimits": {"messages": _NO_LIMIT, "telemetryMessages": _NO_LIMIT, "telemetryDataPoints": _NO_LIMIT},
    "gatewayRateLimits": {
        "messages": _NO_LIMIT,
        "telemetryMessages": _NO_LIMIT,
        "telemetryDataPoints": _NO_LIMIT,
    },
}
_STARTUP_TIMEOUT_S = 120.0  # TB start (imports, connector) until its first telemetry arrives
_STOP_GRACE_S = 10.0
# RSS growth that marks TB's collapse: when behind it keeps starting poll tasks and grows ~1-2 MB/s;
# when keeping up its RSS is flat (< 0.05 MB/s) on this benchmark
_FALLING_BEHIND_MB_S = 0.3
_TEMPLATES = Path(__file__).with_name("peer_thingsboard_templates")


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


# --- installation -----------------------------------------------------------------------------


def default_venv_dir() -> Path:
    """Where TB's own venv is cached: `$EDGE_BENCH_TB_VENV`, else ~/.cache/edge-bench/."""
    env = os.environ.get("EDGE_BENCH_TB_VENV")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "edge-bench" / f"thingsboard-gateway-{TB_VERSION}"


def _installed_versions(python: Path) -> tuple[str, str] | None:
    code = (
        "import importlib.metadata as m; "
        "print(m.version('thingsboard-gateway'), m.version('pymodbus'), m.version('pyserial-asyncio'))"
    )
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.stdout.split()
    return (parts[0], parts[1]) if out.returncode == 0 and len(parts) == 3 else None


def ensure_thingsboard_installed(venv_dir: Path) -> Path:
    """Create `venv_dir` (a venv of its own) with thingsboard-gateway and the pymodbus it needs.

    Idempotent: returns at once when the right versions are already there. Returns the venv's python.
    """
    venv_dir = venv_dir.absolute()
    if venv_dir == Path(sys.prefix).absolute():
        raise ValueError(f"refusing to install ThingsBoard into the running venv {venv_dir}")
    python = venv_dir / "bin" / "python"
    if python.exists() and _installed_versions(python) == (TB_VERSION, TB_PYMODBUS):
        return python
    if not python.exists():
        venv_dir.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True, timeout=300)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run([*pip, *_TB_REQUIREMENTS], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0 or _installed_versions(python) != (TB_VERSION, TB_PYMODBUS):
        raise RuntimeError(f"installing ThingsBoard gateway failed:\n{done.stderr[-3000:]}")
    return python


# --- configuration ----------------------------------------------------------------------------


def _host_alias(host: str, n: int) -> str:
    """The n-th spelling (n >= 1) of `host`'s IPv4 address: a zero-padded hex first octet."""
    address = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    first, rest = str(address).split(".", 1)
    return f"0x{'0' * n}{int(first):x}.{rest}"


def _connection_hosts(devices: list[tuple[str, int, int]], share: bool) -> list[str]:
    seen: dict[tuple[str, int], int] = {}
    hosts = []
    for host, port, _unit in devices:
        n = seen.get((host, port), 0)
        seen[(host, port)] = n + 1
        hosts.append(host if share or n == 0 else _host_alias(host, n))
    return hosts


def _template(name: str) -> Any:
    return json.loads((_TEMPLATES / name).read_text())


def _gateway_config(
    broker_port: int, storage: Literal["memory", "sqlite"], storage_dir: Path
) -> dict[str, Any]:
    config: dict[str, Any] = _template("tb_gateway.json")
    config["thingsboard"] |= {"port": broker_port, "security": {"accessToken": ACCESS_TOKEN}}
    config["storage"] = _template("storage.json")[storage]
    if storage == "sqlite":
        config["storage"]["data_file_path"] = f"{storage_dir}{os.sep}"  # a folder; TB names the file data.db
    return config


def _modbus_config(
    devices: list[tuple[str, int, int]], hosts: list[str], registers: int, poll_interval: float
) -> dict[str, Any]:
    """One entry per device; each register its own 16-bit unsigned timeseries key."""
    timeseries = [
        {"tag": f"r{a}", "type": "16uint", "functionCode": 3, "objectsCount": 1, "address": a}
        for a in range(registers)
    ]
    device = _template("modbus_device.json")
    slaves = [
        device
        | {
            "deviceName": f"bank-{i:03d}-u{unit}",
            "host": host,
            "port": port,
            "unitId": unit,
            "pollPeriod": round(poll_interval * 1000),
            "timeseries": timeseries,
        }
        for i, ((_h, port, unit), host) in enumerate(zip(devices, hosts, strict=True))
    ]
    return {"logLevel": "WARNING", "enableRemoteLogging": False, "master": {"slaves": slaves}}


def _write_configs(
    workdir: Path,
    broker_port: int,
    devices: list[tuple[str, int, int]],
    hosts: list[str],
    registers: int,
    poll_interval: float,
    storage: Literal["memory", "sqlite"],
) -> Path:
    config_dir, logs_dir, storage_dir = workdir / "config", workdir / "logs", workdir / "tb_storage"
    for stale in (config_dir, logs_dir, storage_dir):  # a run never replays another run's data
        shutil.rmtree(stale, ignore_errors=True)
    config_dir.mkdir(parents=True)
    logs_dir.mkdir()
    files = {
        "tb_gateway.json": _gateway_config(broker_port, storage, storage_dir),
        "modbus.json": _modbus_config(devices, hosts, registers, poll_interval),
        "logs.json": _template("logs.json"),  # file names only: TB_GW_LOGS_PATH puts them in logs/
    }
    for name, body in files.items():
        (config_dir / name).write_text(json.dumps(body, indent=2))
    return config_dir


# --- the platform side: answer the session-limits RPC, count telemetry -------------------------


class _Platform:
    """Plays ThingsBoard on the broker. paho calls `_on_message` from its network thread."""

    def __init__(self, broker_port: int) -> None:
        self._port = broker_port
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.points = 0
        self.messages = 0
        self.malformed = 0
        self.first_point_at: float | None = None
        self.session_limits_answered = False
        self._recording = False
        self._arrived = threading.Event()
        self._latencies: list[tuple[float, int]] = []  # (latency ms, points with that ts)
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-bench-tb-platform")
        self._client.on_connect = self._on_connect
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

    def _on_connect(self, client: mqtt.Client, *_args: Any) -> None:
        client.subscribe([(_TELEMETRY_TOPIC, 1), (_RPC_REQUEST_TOPIC, 1)])

    def _on_message(self, client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now_ms = time.time() * 1000.0
        try:  # an exception escaping a paho callback would end its network thread
            body = json.loads(msg.payload)
            if msg.topic == _TELEMETRY_TOPIC:
                self._count(body, now_ms)
            elif body.get("method") == "getSessionLimits":
                request_id = msg.topic.rsplit("/", 1)[1]
                client.publish(_RPC_RESPONSE_PREFIX + request_id, json.dumps(_SESSION_LIMITS), qos=1)
                self.session_limits_answered = True
        except (ValueError, TypeError, AttributeError, KeyError):
            with self._lock:
                self.malformed += 1

    def _count(self, body: dict[str, Any], now_ms: float) -> None:
        batch: list[tuple[float, int]] = []
        total = 0
        for entries in body.values():  # {device: [{"ts": ms, "values": {key: value}}, ...]}
            for entry in entries if isinstance(entries, list) else [entries]:
                values = entry.get("values", entry)
                n = len(values) - (1 if "ts" in values else 0)
                total += n
                if "ts" in entry:
                    batch.append((now_ms - float(entry["ts"]), n))
        with self._lock:
            self.messages += 1
            self.points += total
            if total and self.first_point_at is None:
                self.first_point_at = time.monotonic()
            if self._recording:
                self._latencies.extend(batch)
        self._arrived.set()


def _weighted_percentile(samples: list[tuple[float, int]], q: float) -> float | None:
    total = sum(n for _, n in samples)
    if total == 0:
        return None
    rank, seen = q * (total - 1), 0
    for value, n in sorted(samples):
        seen += n
        if seen > rank:
            return value
    return sorted(samples)[-1][0]


# --- the TB process ---------------------------------------------------------------------------


def _family(proc: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return [proc, *proc.children(recursive=True)]
    return [proc]


def _cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU of TB and its live children, plus children it already reaped."""
    total = 0.0
    for p in _family(proc):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system + (t.children_user + t.children_system if p is proc else 0.0)
    return total


def _busy_share(before: Any, after: Any) -> float:
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


def _memory_mb(proc: psutil.Process, field: str) -> float:
    return sum(_status_kb(p.pid, field) for p in _family(proc)) / 1024.0


def _modbus_connections(proc: psutil.Process, ports: set[int]) -> int:
    count = 0
    for p in _family(proc):
        with contextlib.suppress(psutil.Error):
            count += sum(1 for c in p.net_connections("tcp") if c.raddr and c.raddr.port in ports)
    return count


def _log_summary(workdir: Path) -> str:
    lines: list[str] = []
    for path in [*sorted((workdir / "logs").glob("*.log")), workdir / "tb_stdout.log"]:
        with contextlib.suppress(OSError):
            lines += [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if " ERROR " in ln or "Traceback" in ln]
    summary = f"TB logged {len(lines)} lines at WARNING+ ({len(errors)} errors)"
    return summary + (f", last error: {errors[-1][-200:]}" if errors else "")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, _STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # TB runs in its own session: this reaches its children too
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)


def _sleep_alive(proc: subprocess.Popen[bytes], seconds: float, workdir: Path) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if proc.poll() is not None:
            raise RuntimeError(f"ThingsBoard gateway exited with {proc.returncode}: {_log_summary(workdir)}")
        time.sleep(min(0.2, left))


@dataclass(frozen=True)
class _Window:
    seconds: float
    points: int
    cpu_s: float
    peak_rss_mb: float
    connections: int
    notes: str


def _measure_window(
    proc: subprocess.Popen[bytes],
    platform: _Platform,
    duration: float,
    poll_interval: float,
    workdir: Path,
    ports: set[int],
) -> _Window:
    """Measure a whole number of poll periods, starting half a period after a telemetry message.

    TB sends each poll's values in bursts; a window edge that fell on a burst would count a whole
    poll more or less (5% in 20 s at a 1 s poll). Mid-phase edges count each burst once.
    """
    periods = max(1, round(duration / poll_interval))
    if platform.wait_for_telemetry(timeout=2 * poll_interval + 5.0):
        _sleep_alive(proc, poll_interval / 2, workdir)
    duration = periods * poll_interval
    ps = psutil.Process(proc.pid)
    connections = _modbus_connections(ps, ports)
    rss0, cpu0, points0, machine0 = (
        _memory_mb(ps, "VmRSS"),
        _cpu_seconds(ps),
        platform.snapshot(),
        psutil.cpu_times(),
    )
    t0 = time.monotonic()
    platform.record(True)
    _sleep_alive(proc, duration, workdir)
    cpu1, points1, machine1 = _cpu_seconds(ps), platform.snapshot(), psutil.cpu_times()
    elapsed = time.monotonic() - t0
    platform.record(False)
    rss1, peak, children = _memory_mb(ps, "VmRSS"), _memory_mb(ps, "VmHWM"), len(_family(ps)) - 1
    cpu = cpu1 - cpu0
    notes = (
        f"window {elapsed:.1f} s; TB CPU {cpu / elapsed:.0%} of one core (user+system of its process"
        f"{f' and {children} children' if children else '; it had no child processes'}); "
        f"whole machine {_busy_share(machine0, machine1):.0%} busy on {psutil.cpu_count()} cores "
        "(everything: simulators, broker, this counter, other jobs); "
        f"RSS {rss0:.0f} -> {rss1:.0f} MB in the window ({(rss1 - rss0) / elapsed:+.2f} MB/s)"
    )
    if (rss1 - rss0) / elapsed > _FALLING_BEHIND_MB_S:
        notes += " - TB is falling behind: its poll tasks pile up (it starts one every period regardless)"
    return _Window(elapsed, points1 - points0, cpu, peak, connections, notes)


def run_thingsboard(
    *,
    workdir: Path,
    broker_port: int,
    devices: list[tuple[str, int, int]],
    registers: int,
    poll_interval: float,
    duration: float,
    storage: Literal["memory", "sqlite"],
    warmup: float = 5.0,
    share_connections: bool = False,
    venv_dir: Path | None = None,
) -> PeerResult:
    """Run TB against `devices` for `warmup` seconds, then measure a window of about `duration` s.

    Warm-up starts when TB's first telemetry arrives (its start-up takes seconds and is not measured).
    The window is rounded to whole poll periods (see `_measure_window`). `share_connections` keeps
    devices that share a host:port on one TB connection; `venv_dir` defaults to `default_venv_dir()`.
    """
    if not devices or registers < 1 or poll_interval <= 0 or duration <= 0:
        raise ValueError("need devices, registers >= 1, poll_interval > 0 and duration > 0")
    python = ensure_thingsboard_installed(venv_dir or default_venv_dir())
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    hosts = _connection_hosts(devices, share_connections)
    config_dir = _write_configs(workdir, broker_port, devices, hosts, registers, poll_interval, storage)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TB_", "PYTHON"))}
    env |= {
        "TB_GW_CONFIG_DIR": str(config_dir),
        "TB_GW_LOGS_PATH": str(workdir / "logs"),
        # TB's update check POSTs to its vendor on start; send it to a closed local port instead
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    platform = _Platform(broker_port)
    platform.start()
    try:
        with open(workdir / "tb_stdout.log", "wb") as out:
            proc = subprocess.Popen(
                [str(python), "-m", "thingsboard_gateway.tb_gateway"],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + _STARTUP_TIMEOUT_S
            while platform.first_point_at is None and time.monotonic() < deadline:
                _sleep_alive(proc, 0.2, workdir)
            if platform.first_point_at is None:
                raise RuntimeError(
                    f"no telemetry from ThingsBoard within {_STARTUP_TIMEOUT_S:.0f} s "
                    f"(session limits answered: {platform.session_limits_answered}); {_log_summary(workdir)}"
                )
            _sleep_alive(proc, warmup, workdir)
            ports = {port for _h, port, _u in devices}
            window = _measure_window(proc, platform, duration, poll_interval, workdir, ports)
        finally:
            _stop(proc)
    finally:
        platform.stop()
    sharing = "shared per host:port" if share_connections else "one per device asked"
    notes = (
        f"{len(devices)} devices x {registers} registers, poll {poll_interval:g} s; {window.notes}; "
        f"{window.connections} Modbus TCP connections open ({sharing}); "
        f"latency = receipt - TB's ts (stamped after the Modbus read, so the read is not in it); "
        f"{_log_summary(workdir)}"
    )
    if platform.malformed:
        notes += f"; {platform.malformed} MQTT messages could not be parsed"
    samples = platform.latencies()
    return PeerResult(
        name=f"thingsboard-gateway {TB_VERSION} ({storage} storage)",
        offered_points_per_s=len(devices) * registers / poll_interval,
        delivered_points_per_s=window.points / window.seconds,
        cpu_us_per_point=window.cpu_s * 1e6 / window.points if window.points else float("inf"),
        peak_rss_mb=window.peak_rss_mb,
        p50_latency_ms=_weighted_percentile(samples, 0.50),
        p99_latency_ms=_weighted_percentile(samples, 0.99),
        notes=notes,
    )


# --- a broker and a bank simulator for the quick check and the test ----------------------------


def _free_port() -> int:
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
    port = _free_port()
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
            n, port = min(per_process, devices - first), _free_port()
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


def _main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description="Run ThingsBoard IoT Gateway as the benchmark peer and measure it."
    )
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--registers", type=int, default=50)
    p.add_argument("--poll", type=float, default=1.0, help="poll interval, seconds")
    p.add_argument("--duration", type=float, default=20.0, help="measured window, seconds")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--storage", choices=["memory", "sqlite"], default="memory")
    p.add_argument(
        "--share-connections", action="store_true", help="let devices share TB's host:port connection"
    )
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--per-process", type=int, default=10, help="simulated devices per simulator process")
    args = p.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edge-bench-tb-"))
    with (
        local_broker(workdir) as broker_port,
        bank_simulator(args.devices, args.registers, workdir, args.per_process) as devices,
    ):
        result = run_thingsboard(
            workdir=workdir,
            broker_port=broker_port,
            devices=devices,
            registers=args.registers,
            poll_interval=args.poll,
            duration=args.duration,
            storage=args.storage,
            warmup=args.warmup,
            share_connections=args.share_connections,
        )
    print(json.dumps(asdict(result), indent=2))
    print(f"workdir: {workdir}", file=sys.stderr)


if __name__ == "__main__":
    _main()
