"""Tenants confined on a NATS server: one NATS account per tenant, the gateway's account in between.

nats-server keeps accounts apart entirely (subjects, JetStream, MQTT sessions), so a tenant's users, over
NATS or over the server's MQTT listener, see nothing of another tenant's. The gateway's account holds the
tenants' streams and exports to each tenant's account only that tenant's subjects (events, points, status,
command results); each tenant's account exports back its write requests and module commands. The exported
subjects of the two directions do not overlap, which nats-server requires (no import cycles).

`server_config` renders a whole nats-server configuration (JetStream and MQTT on, with the server_name
MQTT needs); an operator with a NATS deployment of their own takes the `accounts` block it contains.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge.bus.topics import nats_subject

__all__ = ["GATEWAY_ACCOUNT", "NatsUser", "accounts_block", "server_config", "tenant_account"]

GATEWAY_ACCOUNT = "EDGE_GATEWAY"


@dataclass(frozen=True, slots=True)
class NatsUser:
    name: str
    password: str  # plain, or a bcrypt hash ("$2a$..."), which nats-server also accepts
    read_only: bool = False  # may not send write requests or module commands


def tenant_account(tenant: str) -> str:
    return f"EDGE_TENANT_{tenant}"


def _to_tenant(prefix: str, tenant: str) -> list[str]:
    """What the gateway's account exports to a tenant's: its events, points, status and command results."""
    base = f"{prefix}/{tenant}"
    return [
        nats_subject(f"{base}/events/#"),
        nats_subject(f"{base}/points/#"),
        nats_subject(f"{base}/status/#"),
        nats_subject(f"{base}/cmd/+/+/+/result"),
        nats_subject(f"{base}/cmd/module/+/+/result"),
    ]


def _from_tenant(prefix: str, tenant: str) -> list[str]:
    """What a tenant's account exports to the gateway's: write requests and module commands."""
    base = f"{prefix}/{tenant}"
    return [nats_subject(f"{base}/cmd/+/+/+/set"), nats_subject(f"{base}/cmd/module/+/+")]


def _user(user: NatsUser, deny_publish: Sequence[str] = ()) -> dict[str, object]:
    entry: dict[str, object] = {"user": user.name, "password": user.password}
    if deny_publish:
        entry["permissions"] = {"publish": {"deny": list(deny_publish)}}
    return entry


def accounts_block(prefix: str, gateway: NatsUser, tenants: Mapping[str, Sequence[NatsUser]]) -> str:
    """The `accounts { ... }` block (JSON is valid nats-server configuration syntax)."""
    gateway_exports, gateway_imports, accounts = [], [], {}
    for tenant, users in tenants.items():
        account = tenant_account(tenant)
        outbound, inbound = _to_tenant(prefix, tenant), _from_tenant(prefix, tenant)
        gateway_exports += [{"stream": s, "accounts": [account]} for s in outbound]
        gateway_imports += [{"stream": {"account": account, "subject": s}} for s in inbound]
        accounts[account] = {
            "jetstream": "enabled",  # the MQTT listener keeps each account's sessions in JetStream
            "users": [_user(u, inbound if u.read_only else ()) for u in users],
            "exports": [{"stream": s, "accounts": [GATEWAY_ACCOUNT]} for s in inbound],
            "imports": [{"stream": {"account": GATEWAY_ACCOUNT, "subject": s}} for s in outbound],
        }
    accounts[GATEWAY_ACCOUNT] = {
        "jetstream": "enabled",
        "users": [_user(gateway)],
        "exports": gateway_exports,
        "imports": gateway_imports,
    }
    return "accounts: " + json.dumps(accounts, indent=2)


def server_config(
    *,
    server_name: str,
    host: str,
    port: int,
    mqtt_port: int,
    store_dir: str,
    prefix: str,
    gateway: NatsUser,
    tenants: Mapping[str, Sequence[NatsUser]],
) -> str:
    """A nats-server configuration: NATS and MQTT listeners, JetStream in `store_dir`, the accounts."""
    head = {
        "server_name": server_name,  # MQTT requires one
        "listen": f"{host}:{port}",
        "jetstream": {"store_dir": store_dir},
        "mqtt": {"listen": f"{host}:{mqtt_port}"},
    }
    lines = [f"{key}: {json.dumps(value)}" for key, value in head.items()]
    return "\n".join([*lines, accounts_block(prefix, gateway, tenants), ""])
