"""The platform side of the cloud simulator: per tenant a signing key, a queue of commands and deployments,
an entitlement answer, and the results the gateway's uplink brings back.

Like the receiver, it imports nothing of the gateway: it follows cloud_sync/README.md ("Downlink") on its
own. Messages are JWTs signed ES256 with the tenant's private key (joserfc); each carries `jti`, `exp`,
`iat`, `tenant`, `aud` (the gateway) and `kind`.

    GET  /v1/downlink/{tenant}?gateway=&after=&wait=   long-poll: 200 {"messages": [{"seq", "jws"}]} or 204
    GET  /v1/entitlements/{tenant}?gateway=            200 {"jws": …} (kind "entitlements")
    GET  /_sim/platform/{tenant}/key                   the tenant's public key (PEM)
    POST /_sim/platform/{tenant}/commands              {"gateway", "kind": "point.write"|"module.command", …}
    POST /_sim/platform/{tenant}/deployments           {"gateway", "version", "patch"|"file"}
    PUT  /_sim/platform/{tenant}/entitlements          {"entitlements": [...], "push": "<gateway>"|null}
    POST /_sim/platform/{tenant}/messages              {"jws": …}: queue a message signed elsewhere
    GET  /_sim/platform/{tenant}/results               the org.edgegw.cloud.result events received
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey

RESULT_TYPE = "org.edgegw.cloud.result"
MAX_WAIT = 60.0  # seconds a long-poll is held at most


def demo_key(tenant: str, seed: int = 0) -> ec.EllipticCurvePrivateKey:
    """A predictable P-256 key per tenant (demos and tests only, never anything real)."""
    digest = hashlib.sha256(f"edge-sim-platform:{seed}:{tenant}".encode()).digest()
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    return ec.derive_private_key(int.from_bytes(digest, "big") % (order - 1) + 1, ec.SECP256R1())


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass
class TenantPlatform:
    key: ec.EllipticCurvePrivateKey
    queue: list[tuple[int, str]] = field(default_factory=list)  # (seq, jws) not yet acknowledged
    next_seq: int = 1
    entitlements: list[str] | None = None  # None: the endpoint answers 404 (no answer published)
    results: list[dict[str, Any]] = field(default_factory=list)  # data of result events, first arrival
    result_arrived: dict[str, float] = field(default_factory=dict)  # message id -> first result's arrival
    issued: dict[str, float] = field(default_factory=dict)  # message id -> when it was queued
    polls: int = 0
    acked: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class Scenario:
    """What the platform does by itself a few seconds after start (`edge demo`): one point write and one
    deployment adding a device, for one tenant of one gateway."""

    gateway: str
    tenant: str
    after: float
    write: dict[str, Any]  # site, device, point, value
    device: dict[str, Any]  # a [[devices]] table to add

    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        version = f"{self.gateway}-{int(time.time())}"
        patch = {"devices": {"upsert": [self.device]}}
        return [("point.write", dict(self.write)), ("deployment", {"version": version, "patch": patch})]


class Platform:
    def __init__(self, tenants: list[str], seed: int = 0, ttl: float = 300.0) -> None:
        self.tenants = {t: TenantPlatform(demo_key(t, seed)) for t in tenants}
        self.ttl = ttl
        self.on_result: Callable[[str, dict[str, Any]], None] | None = None  # told of each result

    # ---- what an operator does -------------------------------------------------------------------------

    def sign(
        self, tenant: str, gateway: str, kind: str, body: dict[str, Any], ttl: float | None = None
    ) -> str:
        now = int(time.time())
        claims = {
            "jti": body.pop("jti", None) or uuid.uuid4().hex,
            "iat": now,
            "exp": now + int(self.ttl if ttl is None else ttl),
            "tenant": tenant,
            "aud": gateway,
            "kind": kind,
            **body,
        }
        key = ECKey.import_key(
            self.tenants[tenant].key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return jwt.encode({"alg": "ES256", "typ": "JWT"}, claims, key)

    def enqueue(self, tenant: str, token: str) -> int:
        record = self.tenants[tenant]
        seq = record.next_seq
        record.next_seq += 1
        record.queue.append((seq, token))
        record.wakeup.set()
        return seq

    def send(
        self, tenant: str, gateway: str, kind: str, body: dict[str, Any], ttl: float | None = None
    ) -> str:
        """Sign and queue a message; returns its id."""
        token = self.sign(tenant, gateway, kind, dict(body), ttl)
        jti = str(jwt.decode(token, ECKey.import_key(public_pem(self.tenants[tenant].key))).claims["jti"])
        self.tenants[tenant].issued[jti] = time.time()
        self.enqueue(tenant, token)
        return jti

    def set_entitlements(self, tenant: str, flags: list[str], push: str | None = None) -> str | None:
        """Publish the tenant's entitlements; with `push` (a gateway id) also send them down at once."""
        self.tenants[tenant].entitlements = list(flags)
        return self.send(tenant, push, "entitlements", {"entitlements": list(flags)}) if push else None

    def result(self, tenant: str, jti: str) -> dict[str, Any] | None:
        return next((r for r in self.tenants[tenant].results if r.get("id") == jti), None)

    def received_result(self, tenant: str, data: dict[str, Any]) -> None:
        """A result event the uplink delivered (called by the receiver, once per unique event)."""
        record = self.tenants.get(tenant)
        if record is None:
            return
        record.results.append(data)
        if self.on_result is not None:
            self.on_result(tenant, data)
        jti = data.get("id")
        if isinstance(jti, str):
            record.result_arrived.setdefault(jti, time.time())

    # ---- HTTP ------------------------------------------------------------------------------------------

    async def downlink(self, tenant: str, query: dict[str, str]) -> tuple[int, dict[str, Any] | None]:
        record = self.tenants[tenant]
        record.polls += 1
        after = int(query.get("after", "0") or 0)
        before = len(record.queue)
        record.queue = [(s, j) for s, j in record.queue if s > after]
        record.acked += before - len(record.queue)
        wait = min(float(query.get("wait", "25") or 25), MAX_WAIT)
        if not record.queue:
            record.wakeup.clear()
            try:
                async with asyncio.timeout(wait):
                    await record.wakeup.wait()
            except TimeoutError:
                return 204, None
            if not record.queue:  # woken by `wake_all` (the server is closing)
                return 204, None
        limit = int(query.get("max", "100") or 100)
        return 200, {"messages": [{"seq": s, "jws": j} for s, j in record.queue[:limit]]}

    def wake_all(self) -> None:
        """End every held long-poll now (the server is going down; their sockets are being reset)."""
        for record in self.tenants.values():
            record.wakeup.set()

    def entitlement_answer(self, tenant: str, gateway: str) -> tuple[int, dict[str, Any]]:
        flags = self.tenants[tenant].entitlements
        if flags is None:
            return 404, {"error": f"no entitlements published for {tenant}"}
        return 200, {"jws": self.sign(tenant, gateway, "entitlements", {"entitlements": flags})}

    def control(self, tenant: str, action: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The /_sim/platform/{tenant}/{action} requests (operator side)."""
        gateway = str(body.pop("gateway", ""))
        if action == "commands":
            kind = str(body.pop("kind", "point.write"))
            ttl = body.pop("ttl", None)
            return 200, {"id": self.send(tenant, gateway, kind, body, ttl)}
        if action == "deployments":
            return 200, {"id": self.send(tenant, gateway, "deployment", body)}
        if action == "entitlements":
            flags = [str(f) for f in body.get("entitlements", [])]
            return 200, {"id": self.set_entitlements(tenant, flags, body.get("push") or None)}
        if action == "messages":
            return 200, {"seq": self.enqueue(tenant, str(body["jws"]))}
        return 404, {"error": f"unknown platform action {action!r}"}
