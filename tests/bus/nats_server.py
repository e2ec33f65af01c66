"""A private nats-server (Debian's package) for tests: JetStream in a temporary store, MQTT on, one NATS account
per tenant as `edge.bus.nats_access` renders them, on free ports of 127.0.0.1 (never the system's 4222)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from edge.bus.nats_access import NatsUser, server_config
from tests.helpers import free_port, wait_port

GATEWAY = NatsUser("gateway", "gateway-secret")
TENANT_USERS = {
    "acme": [NatsUser("bms", "acme-secret"), NatsUser("viewer", "viewer-secret", read_only=True)],
    "globex": [NatsUser("scada", "globex-secret")],
}


class NatsServer:
    def __init__(self, workdir: Path) -> None:
        self.port, self.mqtt_port = free_port(), free_port()
        self.workdir = workdir
        self.store = workdir / "jetstream"
        self.conf = workdir / "nats.conf"
        self.conf.write_text(
            server_config(
                server_name=f"edge-test-{self.port}",
                host="127.0.0.1",
                port=self.port,
                mqtt_port=self.mqtt_port,
                store_dir=str(self.store),
                prefix="edge",
                gateway=GATEWAY,
                tenants=TENANT_USERS,
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        log = (self.workdir / "nats.log").open("ab")
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=log, stderr=log)
        wait_port(self.port)
        wait_port(self.mqtt_port)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def gateway_config(path: Path, server: NatsServer, *, extra: str = "") -> Path:
    """A gateway on the NATS bus with tenants acme and globex and no devices (tests append events)."""
    path.write_text(
        f"""
[gateway]
id = "gw-nats"
data_dir = "data"
[bus]
mode = "nats"
username = "{GATEWAY.name}"
password = "{GATEWAY.password}"
[bus.nats]
servers = ["{server.url}"]
mqtt_port = {server.mqtt_port}
ack_timeout = 3
[storage]
commit_interval_ms = 2
[[tenants]]
id = "acme"
entitlements = ["nats_probe"]
[[tenants]]
id = "globex"
[[sites]]
id = "roof"
{extra}
"""
    )
    return path
