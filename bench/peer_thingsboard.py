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

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt

from bench.peer_common import (
    PeerResult,
    PeerRun,
    TelemetryCounter,
    log_summary,
    peer_result,
    quick_check,
    quick_check_parser,
    run_measured,
)

__all__ = [
    "TB_PYMODBUS",
    "TB_VERSION",
    "default_venv_dir",
    "ensure_thingsboard_installed",
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
_TEMPLATES = Path(__file__).with_name("peer_thingsboard_templates")


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


class _Platform(TelemetryCounter):
    """Plays ThingsBoard on the broker: answers the session-limits RPC, counts `v1/gateway/telemetry`."""

    def __init__(self, broker_port: int) -> None:
        topics = [(_TELEMETRY_TOPIC, 1), (_RPC_REQUEST_TOPIC, 1)]
        super().__init__(broker_port, topics, client_id="edge-bench-tb-platform")
        self.session_limits_answered = False

    def handle(self, client: mqtt.Client, topic: str, body: Any) -> None:
        if body.get("method") == "getSessionLimits":
            request_id = topic.rsplit("/", 1)[1]
            client.publish(_RPC_RESPONSE_PREFIX + request_id, json.dumps(_SESSION_LIMITS), qos=1)
            self.session_limits_answered = True

    def count(self, topic: str, body: Any, now_ms: float) -> tuple[int, list[tuple[float, int]]] | None:
        if topic != _TELEMETRY_TOPIC:
            return None
        batch: list[tuple[float, int]] = []
        total = 0
        for entries in body.values():  # {device: [{"ts": ms, "values": {key: value}}, ...]}
            for entry in entries if isinstance(entries, list) else [entries]:
                values = entry.get("values", entry)
                n = len(values) - (1 if "ts" in values else 0)
                total += n
                if "ts" in entry:
                    batch.append((now_ms - float(entry["ts"]), n))
        return total, batch


def _log_summary(workdir: Path) -> str:
    return log_summary(
        "TB", [*sorted((workdir / "logs").glob("*.log")), workdir / "tb_stdout.log"], (" ERROR ", "Traceback")
    )


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
    The window is rounded to whole poll periods (see `bench.peer_common.measure_window`). `share_connections` keeps
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
    run = PeerRun(
        what="ThingsBoard",
        argv=[str(python), "-m", "thingsboard_gateway.tb_gateway"],
        cwd=workdir,
        stdout=workdir / "tb_stdout.log",
        why_dead=lambda: (
            f"session limits answered: {platform.session_limits_answered}; " + _log_summary(workdir)
        ),
        env=env,
        startup_timeout=_STARTUP_TIMEOUT_S,
        stop_grace=_STOP_GRACE_S,
    )
    ports = {port for _h, port, _u in devices}
    window, connections = run_measured(
        run, platform, warmup=warmup, duration=duration, poll_interval=poll_interval, device_ports=ports
    )
    sharing = "shared per host:port" if share_connections else "one per device asked"
    notes = (
        f"{len(devices)} devices x {registers} registers, poll {poll_interval:g} s; TB {window.notes}; "
        f"{connections} Modbus TCP connections open ({sharing}); "
        f"latency = receipt - TB's ts (stamped after the Modbus read, so the read is not in it); "
        f"{_log_summary(workdir)}"
    )
    return peer_result(
        f"thingsboard-gateway {TB_VERSION} ({storage} storage)",
        len(devices) * registers / poll_interval,
        window,
        platform,
        notes,
    )


def _main(argv: list[str] | None = None) -> None:
    p = quick_check_parser("Run ThingsBoard IoT Gateway as the benchmark peer and measure it.")
    p.add_argument("--storage", choices=["memory", "sqlite"], default="memory")
    p.add_argument(
        "--share-connections", action="store_true", help="let devices share TB's host:port connection"
    )
    args = p.parse_args(argv)
    quick_check(args, run_thingsboard, storage=args.storage, share_connections=args.share_connections)


if __name__ == "__main__":
    _main()
