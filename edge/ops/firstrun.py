"""First run (`edge init`): a commented starter configuration, the gateway's identity and its secrets.

Written next to the configuration file:
- `edge.toml`: loads as is (`edge config check`), runs (`edge run`) with an embedded broker and no device;
  each section says what to change.
- `secrets/mqtt.password`, `secrets/webhook.secret` (0600, in a 0700 directory): random, referenced from the
  configuration as `file:secrets/...` so the configuration itself holds no secret and can be shared.
Written into the data directory:
- `identity/`: an RSA key pair (0600) and a self-signed certificate for cloud and OPC UA (edge.sdk.certs).

Running it again never replaces an identity or a secret; the configuration only with `force`.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from edge.bus.listeners import free_port_from
from edge.config.versions import CONFIG_VERSION
from edge.ops.files import private_dir
from edge.sdk.certs import CertificateFiles, default_dns_names, write_application_certificate

__all__ = ["IDENTITY_DIR", "SECRETS_DIR", "InitResult", "init_gateway", "write_private"]

IDENTITY_DIR = "identity"
SECRETS_DIR = "secrets"
CERT_DAYS = 5 * 365  # gateways run unattended for years; renew with `edge certs create --force`


@dataclass(frozen=True)
class InitResult:
    config: Path
    data_dir: Path
    identity: CertificateFiles | None  # None: an identity existed and was kept
    created_secrets: tuple[Path, ...]


def write_private(path: Path, data: bytes) -> bool:
    """Create a 0600 file holding `data`; False (and nothing written) if it exists."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


DEFAULT_BUS_PORT = 1883
DEFAULT_TLS_PORT = 8883


def init_gateway(
    config: Path,
    *,
    gateway_id: str | None = None,
    tenant: str = "default",
    site: str = "site",
    data_dir: str = "var",
    data_path: Path | None = None,
    force: bool = False,
) -> InitResult:
    """Write the starter configuration, secrets and identity. Raises FileExistsError for an existing config.

    `data_dir` is written into the configuration; `data_path` is where the data directory is now, if that
    differs (an install into a root directory, see edge.ops.service)."""
    if config.exists() and not force:
        raise FileExistsError(f"{config} exists: refusing to replace it (use --force)")
    gateway_id = gateway_id or _default_id()
    config.parent.mkdir(parents=True, exist_ok=True)
    created = []
    for name, value in (
        ("mqtt.password", secrets.token_urlsafe(32)),
        (
            "webhook.secret",
            "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        ),  # Standard Webhooks
    ):
        path = config.parent / SECRETS_DIR / name
        if write_private(path, value.encode() + b"\n"):
            created.append(path)
    data = data_path or (Path(data_dir) if Path(data_dir).is_absolute() else config.parent / data_dir)
    private_dir(data)
    identity = None
    if not (data / IDENTITY_DIR / "private_key.pem").exists():
        (data / IDENTITY_DIR).mkdir(mode=0o700, exist_ok=True)
        identity = write_application_certificate(
            data / IDENTITY_DIR,
            application_uri=f"urn:edge-gateway:{gateway_id}",
            common_name=f"edge-gateway {gateway_id}",
            days=CERT_DAYS,
            dns_names=default_dns_names(),
        )
    tmp = config.with_name(config.name + ".tmp")
    # Default ports another broker on this machine (a system Mosquitto) already holds would stop `edge run`
    ports = (free_port_from(DEFAULT_BUS_PORT), free_port_from(DEFAULT_TLS_PORT, "0.0.0.0"))
    tmp.write_text(starter_config(gateway_id, tenant, site, data_dir, *ports))
    tmp.replace(config)
    return InitResult(config, data.resolve(), identity, tuple(created))


def _default_id() -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname().lower()).strip("-")
    return host or "gateway"


def starter_config(
    gateway_id: str,
    tenant: str,
    site: str,
    data_dir: str,
    bus_port: int = 1883,
    tls_port: int = 8883,
) -> str:
    return f'''# Edge gateway configuration, written by `edge init`. Check it with `edge config check <this file>`.
# Reference: README.md and docs/operations.md. Secrets are references, never plain text here:
#   "env:NAME"   an environment variable (e.g. set in a systemd drop-in)
#   "file:PATH"  a file readable by the gateway only (chmod 600); PATH relative to this file
config_version = {CONFIG_VERSION}

[gateway]
id = "{gateway_id}"
name = ""
# Outbox (SQLite buffer), identity, module state, status file. Under systemd: /var/lib/edge-gateway.
data_dir = "{data_dir}"

# Who the data belongs to. Every device names one tenant and one site.
[[tenants]]
id = "{tenant}"
name = ""
# storage = "shared"       # "dedicated": this tenant's events in their own database file (docs/operations.md)

[[sites]]
id = "{site}"
timezone = "UTC"

# The local MQTT bus. "embedded" runs Mosquitto for the gateway on 127.0.0.1;
# "external" connects to a broker you run (then set host, port and the credentials).
[bus]
mode = "embedded"
host = "127.0.0.1"
port = {bus_port}{"" if bus_port == DEFAULT_BUS_PORT else "               # 1883 was taken on this machine"}
# username and password: the gateway's login at an external broker only. The embedded broker makes its own;
# local tools on this host connect without one until a LAN listener exists (docs/mqtt-access.md).
username = "edge-gateway"
password = "file:{SECRETS_DIR}/mqtt.password"
persistence = true          # local subscribers' sessions and queued messages survive restarts
# max_queued_bytes = "64MiB"  # per offline session, with max_queued_messages = 100000

# Open the bus to the site's LAN (BMS, SCADA, Node-RED; docs/mqtt-access.md): MQTT over TLS with a tenant
# login. First `edge certs create --profile broker -c <this file> --host <name or address>`.
# [[bus.listeners]]
# port = {tls_port}
# protocol = "mqtt"         # or "websockets"
# tls = true

[storage]
path = "outbox.db"
synchronous = "full"        # committed events survive a power cut

[storage.retention]
max_age = "7d"              # events no consumer took within this are dropped (and counted)
max_bytes = "1GiB"          # per tenant
policy = "drop_oldest"      # or "refuse_newest"

# Devices: `edge device discover` finds them, `edge device add` appends them here. For example:
# [[devices]]
# name = "inverter-1"
# driver = "modbus"
# tenant = "{tenant}"
# site = "{site}"
# profile = "sunspec-inverter"
# poll_interval = 5
# connection = {{ host = "192.168.1.50", port = 502, unit_id = 1 }}

# Modules, e.g. cloud sync; its secrets are references too. The webhook secret made by `edge init` is in
# {SECRETS_DIR}/webhook.secret: give it to the webhook module as "file:{SECRETS_DIR}/webhook.secret".
# [[modules]]
# name = "cloud_sync"
# config = {{ endpoint = "https://cloud.example.com/events", tenants = {{ {tenant} = {{ client_id = "...", client_secret = "env:CLOUD_SECRET" }} }} }}
'''
