"""Node-RED with node-red-contrib-modbus as the benchmark's peer: install it, generate its flow, run, measure.

The tool integrators most often use instead of a gateway, run headless against the same simulators and the
same bench broker as our gateway, measured the same way (`bench.peer_common`).

Installed by the bench with npm from the npm registry into a folder of its own (`default_install_dir()`:
`$EDGE_BENCH_NODERED_DIR`, else `var/bench/node-red` in the repository): node-red 4.1 and
node-red-contrib-modbus 5.23.3, the last release that installs on Node 20 from the registry alone (5.45+
fetch their Modbus library from elsewhere, 5.60 needs Node 22). That folder is also Node-RED's user
directory, so it finds the Modbus nodes in its `node_modules`.

The flow (written per run to `flows.json`, see `flow()`), as a Node-RED user would build it:
- one `modbus-client` config node per device (TCP, its host, port and unit id, the node's defaults:
  command delay 1 ms, timeout 1 s), so every device has its own connection and queue;
- one `modbus-read` node per device: holding registers 0..registers-1 in ONE read, every poll period (whole
  milliseconds: the node takes an integer rate), its topic the device's name;
- one `function` node shared by all reads: one JSON message per device poll,
  `{"device", "ts": Date.now(), "values": [...]}` on `edge-bench-nodered/<device>/telemetry`;
- one `mqtt out` node (QoS 1, not retained) on one `mqtt-broker` config node: the bench broker.
The editor and the admin API are off (`httpAdminRoot: false`), as on a headless production box; telemetry
and diagnostics are off; logging at warn.

Latency is receipt minus `ts`, stamped by the function node after the read, as ThingsBoard's is.

Run `python -m bench.peer_nodered --devices 20 --registers 50 --poll 1.0 --duration 20` for a quick check: it
starts its own Mosquitto and `simulators.modbus_bank` processes (10 devices to a port).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.peer_common import (
    PeerResult,
    PeerRun,
    TelemetryCounter,
    free_port,
    log_summary,
    peer_result,
    quick_check,
    quick_check_parser,
    run_measured,
)

__all__ = [
    "MODBUS_NODES_VERSION",
    "NODE_RED_VERSION",
    "default_install_dir",
    "ensure_nodered_installed",
    "flow",
    "run_nodered",
]

NODE_RED_VERSION = "4.1.15"
MODBUS_NODES_VERSION = "5.23.3"  # the last that installs on Node 20 from the npm registry alone
_PACKAGES = {"node-red": NODE_RED_VERSION, "node-red-contrib-modbus": MODBUS_NODES_VERSION}
_MIN_NODE_MAJOR = 18  # Node-RED 4
TOPIC_PREFIX = "edge-bench-nodered"
_STARTUP_TIMEOUT_S = 90.0
_STOP_GRACE_S = 10.0
_ROOT = Path(__file__).resolve().parent.parent


# --- installation -----------------------------------------------------------------------------


def default_install_dir() -> Path:
    """`$EDGE_BENCH_NODERED_DIR`, else `var/bench/node-red` in the repository (git-ignored)."""
    env = os.environ.get("EDGE_BENCH_NODERED_DIR")
    return Path(env) if env else _ROOT / "var" / "bench" / "node-red"


def _node() -> str:
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        raise RuntimeError("Node-RED needs node and npm on PATH (Debian: apt-get install nodejs npm)")
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False)
    major = int(out.stdout.strip().lstrip("v").split(".")[0] or 0)
    if major < _MIN_NODE_MAJOR:
        raise RuntimeError(f"Node-RED {NODE_RED_VERSION} needs Node {_MIN_NODE_MAJOR}+, found {out.stdout}")
    return node


def _installed(folder: Path) -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        with contextlib.suppress(OSError, ValueError, KeyError):
            meta = json.loads((folder / "node_modules" / name / "package.json").read_text())
            found[name] = str(meta["version"])
    return found


def ensure_nodered_installed(folder: Path) -> Path:
    """npm-install Node-RED and the Modbus nodes into `folder` (idempotent); returns Node-RED's red.js."""
    folder = folder.absolute()
    red = folder / "node_modules" / "node-red" / "red.js"
    _node()
    if _installed(folder) == _PACKAGES and red.exists():
        return red
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"name": "edge-bench-node-red", "private": True, "description": "edge bench peer (generated)"}
    (folder / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    argv = ["npm", "install", "--no-audit", "--no-fund", "--omit=dev", "--save-exact"]
    argv += [f"{name}@{version}" for name, version in _PACKAGES.items()]
    done = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0 or _installed(folder) != _PACKAGES:
        raise RuntimeError(f"installing Node-RED into {folder} failed:\n{done.stderr[-3000:]}")
    return red


# --- configuration ----------------------------------------------------------------------------

_FUNCTION = """\
// one message per device poll: the registers of one read, stamped now
msg.payload = { device: msg.topic, ts: Date.now(), values: msg.payload };
msg.topic = "%s/" + msg.payload.device + "/telemetry";
return msg;
"""


def flow(
    devices: list[tuple[str, int, int]], registers: int, poll_interval: float, broker_port: int
) -> list[dict[str, Any]]:
    """The flows.json of one run: per device a modbus-client and a modbus-read; one function, one mqtt out."""
    rate_ms = round(poll_interval * 1000)
    if rate_ms < 1 or abs(rate_ms - poll_interval * 1000) > 1e-6:
        raise ValueError(f"Node-RED polls in whole milliseconds: {poll_interval} s is not one")
    tab, function, mqtt_out, broker = "bench-tab", "bench-function", "bench-mqtt-out", "bench-broker"
    nodes: list[dict[str, Any]] = [
        {"id": tab, "type": "tab", "label": "edge bench", "disabled": False, "info": ""},
        {
            "id": broker,
            "type": "mqtt-broker",
            "name": "bench broker",
            "broker": "127.0.0.1",
            "port": str(broker_port),
            "clientid": "edge-bench-nodered",
            "autoConnect": True,
            "usetls": False,
            "protocolVersion": "4",
            "keepalive": "60",
            "cleansession": True,
        },
        {
            "id": function,
            "type": "function",
            "z": tab,
            "name": "one message per poll",
            "func": _FUNCTION % TOPIC_PREFIX,
            "outputs": 1,
            "timeout": 0,
            "noerr": 0,
            "initialize": "",
            "finalize": "",
            "libs": [],
            "wires": [[mqtt_out]],
        },
        {
            "id": mqtt_out,
            "type": "mqtt out",
            "z": tab,
            "name": "telemetry",
            "topic": "",
            "qos": "1",
            "retain": "false",
            "broker": broker,
            "wires": [],
        },
    ]
    for i, (host, port, unit) in enumerate(devices, start=1):
        name = f"dev-{i:03d}"
        nodes.append(
            {
                "id": f"client-{i}",
                "type": "modbus-client",
                "name": f"{name} client",
                "clienttype": "tcp",
                "bufferCommands": True,
                "stateLogEnabled": False,
                "queueLogEnabled": False,
                "failureLogEnabled": True,
                "tcpHost": host,
                "tcpPort": str(port),
                "tcpType": "DEFAULT",
                "unit_id": str(unit),
                "commandDelay": "1",
                "clientTimeout": "1000",
                "reconnectOnTimeout": True,
                "reconnectTimeout": "2000",
                "parallelUnitIdsAllowed": True,
            }
        )
        nodes.append(
            {
                "id": f"read-{i}",
                "type": "modbus-read",
                "z": tab,
                "name": f"{name} read",
                "topic": name,
                "showStatusActivities": False,
                "logIOActivities": False,
                "showErrors": True,
                "unitid": "",
                "dataType": "HoldingRegister",
                "adr": "0",
                "quantity": str(registers),
                "rate": str(rate_ms),
                "rateUnit": "ms",
                "delayOnStart": False,
                "startDelayTime": "",
                "server": f"client-{i}",
                "useIOFile": False,
                "ioFile": "",
                "useIOForPayload": False,
                "emptyMsgOnFail": False,
                "wires": [[function], []],
            }
        )
    return nodes


def _settings(ui_port: int, flow_file: Path) -> str:
    settings = {
        "uiPort": ui_port,
        "uiHost": "127.0.0.1",
        "httpAdminRoot": False,  # no editor, no admin API: headless
        "httpNodeRoot": False,
        "flowFile": str(flow_file),
        "credentialSecret": False,
        "telemetry": {"enabled": False, "updateNotification": False},
        "diagnostics": {"enabled": False, "ui": False},
        "externalModules": {"autoInstall": False, "palette": {"allowInstall": False}},
        "functionExternalModules": False,
        "logging": {"console": {"level": "warn", "metrics": False, "audit": False}},
    }
    return "// written by edge bench\nmodule.exports = " + json.dumps(settings, indent=2) + ";\n"


def _write_configs(
    workdir: Path, broker_port: int, devices: list[tuple[str, int, int]], registers: int, poll: float
) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    flow_file = workdir / "flows.json"
    flow_file.write_text(json.dumps(flow(devices, registers, poll, broker_port), indent=2))
    settings = workdir / "settings.js"
    settings.write_text(_settings(free_port(), flow_file))
    return settings


# --- the subscriber side ------------------------------------------------------------------------


class _Counter(TelemetryCounter):
    """Counts the values of each `edge-bench-nodered/<device>/telemetry` message."""

    def __init__(self, broker_port: int) -> None:
        super().__init__(broker_port, [(f"{TOPIC_PREFIX}/+/telemetry", 1)], "edge-bench-nodered-counter")

    def count(self, topic: str, body: Any, now_ms: float) -> tuple[int, list[tuple[float, int]]] | None:
        n = len(body["values"])
        return n, [(now_ms - float(body["ts"]), n)]


def _log_summary(log: Path) -> str:
    return log_summary("Node-RED", [log], ("[error]", "Error"))


def run_nodered(
    *,
    workdir: Path,
    broker_port: int,
    devices: list[tuple[str, int, int]],
    registers: int,
    poll_interval: float,
    duration: float,
    warmup: float = 5.0,
    install_dir: Path | None = None,
) -> PeerResult:
    """Run Node-RED against `devices` for `warmup` seconds after its first message, then measure ~`duration` s."""
    if not devices or registers < 1 or poll_interval <= 0 or duration <= 0:
        raise ValueError("need devices, registers >= 1, poll_interval > 0 and duration > 0")
    red = ensure_nodered_installed(install_dir or default_install_dir())
    workdir = workdir.absolute()
    settings = _write_configs(workdir, broker_port, devices, registers, poll_interval)
    log = workdir / "node-red.log"
    run = PeerRun(
        what="Node-RED",
        argv=[_node(), str(red), "--userDir", str(red.parents[2]), "--settings", str(settings)],
        cwd=workdir,
        stdout=log,
        why_dead=lambda: _log_summary(log),
        startup_timeout=_STARTUP_TIMEOUT_S,
        stop_grace=_STOP_GRACE_S,
    )
    ports = {port for _h, port, _u in devices}
    counter = _Counter(broker_port)
    window, connections = run_measured(
        run, counter, warmup=warmup, duration=duration, poll_interval=poll_interval, device_ports=ports
    )
    notes = (
        f"{len(devices)} devices x {registers} registers, poll {round(poll_interval * 1000)} ms; "
        f"Node-RED {window.notes}; {connections} Modbus TCP connections open (one client per device); "
        "latency = receipt - the function node's Date.now() (after the read, so the read is not in it); "
        f"{_log_summary(log)}"
    )
    name = f"node-red {NODE_RED_VERSION} + node-red-contrib-modbus {MODBUS_NODES_VERSION}"
    return peer_result(name, len(devices) * registers / poll_interval, window, counter, notes)


def _main(argv: list[str] | None = None) -> None:
    p = quick_check_parser("Run Node-RED + node-red-contrib-modbus as the benchmark peer and measure it.")
    quick_check(p.parse_args(argv), run_nodered)


if __name__ == "__main__":
    _main()
