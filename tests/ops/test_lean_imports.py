"""A gateway loads only what its configuration uses (docs/performance.md, "Memory."): `edge run` of the default
configuration (SQLite, embedded Mosquitto, Modbus devices, an in-process module, API off) never imports the PostgreSQL client, NATS,
gRPC and protobuf, the API stack or the drivers no device uses. Each costs RSS in every gateway process
(psycopg alone ~9 MB, the isolated modules' gRPC stack ~13 MB, cryptography ~10 MB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.helpers import SimulatorProcess, free_port

# package -> what needs it; none of these is configured below
NOT_CONFIGURED = {
    "psycopg": "a PostgreSQL outbox or cluster mode",
    "psycopg_binary": "a PostgreSQL outbox or cluster mode",
    "nats": "[bus] mode = nats",
    "grpc": "an isolated module or a sidecar",
    "google": "an isolated module (module.proto) or Sparkplug B",
    "fastapi": "[api] enabled",
    "uvicorn": "[api] enabled",
    "starlette": "[api] enabled",
    "bacpypes3": "a BACnet device",
    "asyncua": "an OPC UA device",
    "authlib": "cloud sync or a platform downlink (OAuth2)",
    "cryptography": "making certificates, OPC UA security, signed downlink commands",
    "tomlkit": "the commands that edit the configuration file",
}


def _config(tmp_path: Path, broker: int, modbus: int) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(
        f"""
[gateway]
id = "lean"
data_dir = "data"

[bus]
port = {broker}

[[tenants]]
id = "acme"
entitlements = ["alarms"]

[[sites]]
id = "roof"

[[devices]]
name = "inv-1"
driver = "modbus"
tenant = "acme"
site = "roof"
profile = "sunspec-inverter"
poll_interval = 0.2
timeout = 0.5
connection = {{ host = "127.0.0.1", port = {modbus}, unit_id = 1 }}

[[modules]]
name = "alarms"

[[modules.config.rules]]
id = "hot"
point = "cabinet_temperature"
devices = "inv-*"
high = 60.0
"""
    )
    return path


def test_the_default_gateway_loads_no_backend_it_does_not_use(tmp_path: Path) -> None:
    modbus = free_port()
    with SimulatorProcess(modbus, 1):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.ops.lean_gateway_child",
                str(_config(tmp_path, free_port(), modbus)),
                "1",
            ],
            capture_output=True,
            timeout=90,
            cwd=Path(__file__).parents[2],
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = orjson.loads(done.stdout.splitlines()[-1])
    assert report["events_stored"] >= 1, "the gateway polled its device and stored the events"
    loaded = set(report["packages"])
    assert {"pymodbus", "paho", "modules"} <= loaded, "the configured driver, bus and module did load"
    unexpected = {name: why for name, why in NOT_CONFIGURED.items() if name in loaded}
    assert not unexpected, f"loaded without being configured (package: only needed for): {unexpected}"
