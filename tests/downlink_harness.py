"""Building blocks of the downlink tests: a gateway configuration whose tenants talk to the cloud simulator
both ways, and an independent signer (pyjwt over cryptography keys: no project code signs a test message)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import tomlkit
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from simulators.cloud import CloudSimulator
from tests.cloud_harness import sync_config
from tests.helpers import until

GATEWAY = "gw-test"
FAST_CLOUD = {
    "poll_wait": 2.0,
    "backoff_base": 0.2,
    "backoff_cap": 1.0,
    "entitlement_interval": 1.0,
    "deploy_timeout": 4.0,
}


def add_cloud(path: Path, cloud: CloudSimulator, tenants: tuple[str, ...], **settings: Any) -> Path:
    """Give each tenant its platform ([tenants.cloud]) and the uplink (cloud_sync), both on `cloud`."""
    document = tomlkit.parse(path.read_text())
    keys = path.parent / "keys"
    keys.mkdir(exist_ok=True)
    per_tenant = settings.pop("per_tenant", {})
    for entry in document["tenants"]:
        tenant = str(entry["id"])
        if tenant not in tenants:
            continue
        pem = keys / f"{tenant}.pem"
        pem.write_bytes(public_pem(cloud.platform.tenants[tenant].key))
        creds = cloud.clients[tenant]
        table = {
            "url": cloud.url,
            "token_url": cloud.token_url,
            "client_id": creds.client_id,
            "client_secret": f"env:EDGE_TEST_SECRET_{tenant.upper()}",
            "verify_key": f"keys/{tenant}.pem",
            **per_tenant.get(tenant, {}),
        }
        entry["cloud"] = table
    document["cloud"] = {**FAST_CLOUD, **settings}
    sync = sync_config({t: cloud for t in tenants}, path.parent, linger=0.05)
    modules = document.get("modules")
    if modules is None:
        document["modules"] = tomlkit.aot()
        modules = document["modules"]
    modules.append({"name": "cloud_sync", "config": sync})
    path.write_text(tomlkit.dumps(document))
    return path


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(key: ec.EllipticCurvePrivateKey, claims: dict[str, Any]) -> str:
    """A platform message signed by pyjwt (ES256), independently of the gateway's joserfc."""
    return jwt.encode(claims, key, algorithm="ES256")


def claims(
    tenant: str, kind: str, *, ttl: float = 60.0, gateway: str = GATEWAY, **body: Any
) -> dict[str, Any]:
    now = int(time.time())
    return {
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + int(ttl),
        "tenant": tenant,
        "aud": gateway,
        "kind": kind,
        **body,
    }


def send(cloud: CloudSimulator, tenant: str, key: ec.EllipticCurvePrivateKey, message: dict[str, Any]) -> str:
    """Queue a message signed by the test on `tenant`'s downlink; returns its id."""
    cloud.platform.enqueue(tenant, sign(key, message))
    return str(message["jti"])


async def result_of(cloud: CloudSimulator, tenant: str, jti: str, within: float = 30.0) -> dict[str, Any]:
    """The first result the uplink brought back to the platform for one message id."""
    await until(
        lambda: cloud.platform.result(tenant, jti) is not None,
        within=within,
        detail=lambda: (jti, [(r["id"], r["status"]) for r in cloud.platform.tenants[tenant].results]),
    )
    result = cloud.platform.result(tenant, jti)
    assert result is not None
    return result
