"""A cloud ingestion endpoint with OAuth2, HMAC verification, deduplication and fault injection.

An independent receiver for the gateway's cloud sync (it imports nothing from `edge` or `cloud_sync`: it
implements the documented wire protocol on its own, so a bug on one side cannot hide one on the other).
A small HTTP/1.1 server on asyncio and h11 (already installed with httpx): owning the sockets is what lets it
refuse connections, reset them before or after storing a batch, or stall, which an ASGI framework hides.

    POST /oauth2/token   client credentials (HTTP Basic or form); short-lived bearer tokens
    POST /v1/events      CloudEvents batch (application/cloudevents-batch+json, gzip), signed:
                         X-Edge-Timestamp, X-Edge-Key-Id, X-Edge-Signature: v1=HMAC-SHA256(key, "ts." + body)
    GET  /_sim/stats     what was received, per tenant (JSON)
    GET  /_sim/latency?tenant=T&since=EPOCH   sample time -> stored, of T's events stored since then (ms)
    GET  /_sim/arrivals  when each stored event was first stored, per tenant: {tenant: {event id: epoch s}}
    POST /_sim/faults    fault injection (JSON, see `Faults.update`)

Each tenant has one OAuth2 client; a batch must hold only events whose `tenantid` is the token's tenant.
Answers: 200 `{"accepted", "duplicates"}`; 409 when every event was already stored; 400 naming the bad events
`{"rejected": [{"index", "id", "reason"}]}` (nothing of the batch is stored); 401 for a missing, expired or
revoked token, a bad signature, a stale timestamp or a replayed signature; 403 for another tenant's events.

    python -m simulators.cloud --port 8443 --tenants acme,globex
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import hashlib
import hmac
import random
import secrets
import socket
import struct
import sys
import time
import urllib.parse
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import h11
import orjson

from simulators.cloud_platform import RESULT_TYPE, Platform, Scenario, public_pem

MAX_BODY = 32 << 20  # bytes on the wire
MAX_INFLATED = 128 << 20
SIGNATURE_WINDOW = 300.0  # seconds either side of our clock


@dataclass(frozen=True)
class Credentials:
    """One tenant's OAuth2 client and HMAC key, as the cloud platform registered them."""

    tenant: str
    client_id: str
    client_secret: str
    hmac_key: bytes
    key_id: str = "k1"

    @classmethod
    def demo(cls, tenant: str) -> Credentials:
        """Predictable credentials for demos and the CLI (never for anything real)."""
        return cls(tenant, tenant, f"{tenant}-client-secret", f"{tenant}-hmac-key".encode())


@dataclass
class Faults:
    """What the endpoint does wrong. Probabilities apply per events request, counts to the next requests."""

    down: bool = False  # the port refuses connections
    fail_next: list[tuple[int, float | None]] = field(default_factory=list)  # (status, Retry-After)
    error_rate: float = 0.0  # answer `error_status` without storing
    error_status: int = 503
    reset_rate: float = 0.0  # reset the connection before storing
    reset_after_rate: float = 0.0  # store, then reset the connection (the answer is lost: duplicates)
    latency: float = 0.0  # seconds before answering (plus up to `jitter`)
    jitter: float = 0.0
    poison: set[str] = field(default_factory=set)  # event ids answered 400

    def update(self, spec: dict[str, Any]) -> None:
        """Apply a JSON fault spec, e.g. {"error_rate": 0.2, "fail_next": [[429, 2]], "poison": ["id"]}."""
        for key, value in spec.items():
            if key == "fail_next":
                self.fail_next.extend((int(s), None if r is None else float(r)) for s, r in value)
            elif key == "poison":
                self.poison.update(str(v) for v in value)
            elif key in ("error_rate", "reset_rate", "reset_after_rate", "latency", "jitter"):
                setattr(self, key, float(value))
            elif key == "error_status":
                self.error_status = int(value)
            elif key != "down" and key != "down_for" and key != "revoke_tokens":
                raise ValueError(f"unknown fault {key!r}")


@dataclass
class TenantRecord:
    """What one tenant's client delivered, after deduplication by (source, id)."""

    events: list[tuple[str, str, int | None, str]] = field(default_factory=list)  # (source, id, seq, type)
    arrived: dict[str, float] = field(default_factory=dict)  # event id -> when it was first stored
    duplicates: int = 0
    batches: int = 0
    duplicate_batches: int = 0  # answered 409
    order_violations: int = 0  # a device's new event whose sequence is not above the last one stored
    gaps: int = 0  # missing sequence numbers between stored events of a device
    last_sequence: dict[str, int] = field(default_factory=dict)  # source -> last stored sequence
    # (when stored, seconds since the event's sample `time`) of every stored event, for the benchmarks
    latencies: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class RequestRecord:
    path: str
    status: int
    client: str | None
    tenant: str | None
    events: int
    idempotency_key: str | None
    reason: str
    at: float


class CloudSimulator:
    def __init__(
        self,
        credentials: Iterable[Credentials],
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        token_ttl: float = 300.0,
        seed: int = 0,
        sink: bool = False,
    ) -> None:
        self.host, self.port = host, port
        # sink: authenticate, verify and inflate, but neither parse nor validate events (dedupe per batch by
        # Idempotency-Key); for throughput measurements where per-event JSON parsing would be the bottleneck
        self.sink = sink
        self.clients = {c.client_id: c for c in credentials}
        self.token_ttl = token_ttl
        self.faults = Faults()
        self.tenants: dict[str, TenantRecord] = {c.tenant: TenantRecord() for c in self.clients.values()}
        self.requests: list[RequestRecord] = []
        self.tokens_issued: dict[str, int] = {c: 0 for c in self.clients}
        self.cross_tenant = 0  # batches holding another tenant's events (refused)
        self.key_conflicts = 0  # one idempotency key seen with different events
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (client id, expires at)
        self._seen: set[tuple[str, str]] = set()
        self._keys: dict[str, str] = {}  # idempotency key -> digest of the event ids
        self._signatures: dict[str, float] = {}  # signature -> when seen (replay window)
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._down_task: asyncio.Task[None] | None = None
        # the platform side (commands, deployments, entitlements, signing keys): simulators/cloud_platform.py
        self.platform = Platform([c.tenant for c in self.clients.values()], seed=seed)

    # ---- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> CloudSimulator:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._down_task is not None:
            self._down_task.cancel()
        await self._close_server()

    async def __aenter__(self) -> CloudSimulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _close_server(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                _reset(writer)
            self.platform.wake_all()
            await self._server.wait_closed()
            self._server = None
        if self._handlers:  # connection handlers end once their sockets are gone
            await asyncio.wait(list(self._handlers), timeout=2.0)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def events_url(self) -> str:
        return f"{self.url}/v1/events"

    @property
    def token_url(self) -> str:
        return f"{self.url}/oauth2/token"

    # ---- fault injection -------------------------------------------------------------------------------

    async def set_down(self, down: bool) -> None:
        """Down: the port refuses connections and open ones are reset. Up: listening again, same port."""
        self.faults.down = down
        if down:
            await self._close_server()
        elif self._server is None:
            await self.start()

    def revoke_tokens(self) -> None:
        """Every token issued so far is refused from now on (a 401 until the client fetches a new one)."""
        self._tokens.clear()

    # ---- observations ----------------------------------------------------------------------------------

    def received(self, tenant: str) -> list[tuple[str, str, int | None, str]]:
        return self.tenants[tenant].events

    def unique(self, tenant: str | None = None) -> int:
        records = [self.tenants[tenant]] if tenant else list(self.tenants.values())
        return sum(len(r.events) for r in records)

    def latency(self, tenant: str, since: float) -> dict[str, Any]:
        """Sample time -> stored, of `tenant`'s events stored at or after `since` (epoch seconds): count,
        median, 99th percentile and maximum in milliseconds."""
        values = sorted(lag for at, lag in self.tenants[tenant].latencies if at >= since)
        if not values:
            return {"n": 0}

        def pct(q: float) -> float:
            return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)

        return {"n": len(values), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}

    def stats(self) -> dict[str, Any]:
        statuses: dict[str, int] = {}
        for r in self.requests:
            statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
        return {
            "tenants": {
                t: {
                    "unique": len(r.events),
                    "duplicates": r.duplicates,
                    "batches": r.batches,
                    "duplicate_batches": r.duplicate_batches,
                    "order_violations": r.order_violations,
                    "gaps": r.gaps,
                    "devices": len(r.last_sequence),
                }
                for t, r in self.tenants.items()
            },
            "requests": len(self.requests),
            "statuses": statuses,
            "tokens_issued": dict(self.tokens_issued),
            "cross_tenant": self.cross_tenant,
            "key_conflicts": self.key_conflicts,
        }

    # ---- HTTP ------------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        self._connections.add(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _read_request(conn, reader)
                if request is None:
                    return
                head, body = request
                answer = await self._route(head, body, writer)
                if answer is None:  # the fault injection reset the connection
                    return
                status, headers, payload = answer
                head_out = [(b"content-length", str(len(payload)).encode()), *headers]
                writer.write(conn.send(h11.Response(status_code=status, headers=head_out)))
                writer.write(conn.send(h11.Data(data=payload)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            return
        finally:
            self._connections.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _route(
        self, head: h11.Request, body: bytes, writer: asyncio.StreamWriter
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        path = head.target.decode().split("?")[0]
        headers = {k.decode().lower(): v.decode("latin1") for k, v in head.headers}
        method = head.method.decode()
        if method == "POST" and path == "/oauth2/token":
            return self._token(headers, body)
        if method == "POST" and path == "/v1/events":
            return await self._events(headers, body, writer)
        if method == "GET" and path == "/_sim/stats":
            return _json(200, self.stats())
        if method == "GET" and path == "/_sim/latency":
            query = urllib.parse.parse_qs(head.target.decode().partition("?")[2])
            tenant, since = query.get("tenant", [""])[0], float(query.get("since", ["0"])[0])
            if tenant not in self.tenants:
                return _json(404, {"error": f"no tenant {tenant!r}"})
            return _json(200, self.latency(tenant, since))
        if method == "GET" and path == "/_sim/arrivals":
            return _json(200, {t: r.arrived for t, r in self.tenants.items()})
        if method == "POST" and path == "/_sim/faults":
            return await self._set_faults(body)
        if path.startswith(("/v1/downlink/", "/v1/entitlements/", "/_sim/platform/")):
            return await self._platform(method, head.target.decode(), headers, body)
        if method == "GET" and path == "/healthz":
            return _json(200, {"ok": True})
        return _json(404, {"error": "not found"})

    async def _platform(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        path, _, query_text = target.partition("?")
        query = dict(urllib.parse.parse_qsl(query_text))
        parts = path.strip("/").split("/")
        tenant = parts[2] if len(parts) > 2 else ""
        if tenant not in self.platform.tenants:
            return _json(404, {"error": f"unknown tenant {tenant!r}"})
        if parts[0] == "_sim":
            if len(parts) == 4 and parts[3] == "key":
                return (
                    200,
                    [(b"content-type", b"application/x-pem-file")],
                    public_pem(self.platform.tenants[tenant].key),
                )
            if len(parts) == 4 and parts[3] == "results":
                return _json(200, {"results": self.platform.tenants[tenant].results})
            try:
                spec = orjson.loads(body or b"{}")
                return _json(*self.platform.control(tenant, parts[3] if len(parts) == 4 else "", spec))
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                return _json(400, {"error": str(exc)})
        auth = headers.get("authorization", "")
        token = self._tokens.get(auth[7:]) if auth.lower().startswith("bearer ") else None
        if token is None or token[1] < time.time():
            return _json(
                401, {"error": "invalid_token"}, [(b"www-authenticate", b'Bearer error="invalid_token"')]
            )
        if self.clients[token[0]].tenant != tenant:
            self.cross_tenant += 1
            return _json(403, {"error": "another tenant's downlink"})
        if method == "GET" and parts[1] == "entitlements":
            return _json(*self.platform.entitlement_answer(tenant, query.get("gateway", "")))
        if method == "GET" and parts[1] == "downlink":
            status, answer = await self.platform.downlink(tenant, query)
            return (204, [], b"") if answer is None else _json(status, answer)
        return _json(405, {"error": "method not allowed"})

    def _token(self, headers: dict[str, str], body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        form = dict(urllib.parse.parse_qsl(body.decode("latin1")))
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                raw = base64.b64decode(auth[6:]).decode("latin1")
                user, _, password = raw.partition(":")
                client_id, secret = user, password
                if user not in self.clients:  # RFC 6749 §2.3.1 form-encodes them; some clients do not
                    client_id, secret = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)
        if form.get("grant_type") != "client_credentials":
            return _json(400, {"error": "unsupported_grant_type"})
        client = self.clients.get(client_id or "")
        if client is None or not hmac.compare_digest(client.client_secret, secret or ""):
            return _json(401, {"error": "invalid_client"}, [(b"www-authenticate", b"Basic")])
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (client.client_id, time.time() + self.token_ttl)
        self.tokens_issued[client.client_id] += 1
        ttl = max(1, int(self.token_ttl))
        return _json(200, {"access_token": token, "token_type": "Bearer", "expires_in": ttl})

    async def _events(
        self, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        faults = self.faults
        if faults.latency or faults.jitter:
            await asyncio.sleep(faults.latency + self._rng.random() * faults.jitter)
        if faults.reset_rate and self._rng.random() < faults.reset_rate:
            self._log("/v1/events", 0, None, None, 0, headers, "reset before storing")
            _reset(writer)
            return None
        if faults.fail_next or (faults.error_rate and self._rng.random() < faults.error_rate):
            status, retry_after = faults.fail_next.pop(0) if faults.fail_next else (faults.error_status, None)
            extra = [(b"retry-after", str(int(retry_after)).encode())] if retry_after is not None else []
            self._log("/v1/events", status, None, None, 0, headers, "injected")
            return _json(status, {"error": f"injected {status}"}, extra)
        status, payload, client, events = self._ingest(headers, body)
        tenant = self.clients[client].tenant if client else None
        self._log("/v1/events", status, client, tenant, events, headers, payload.get("error", ""))
        if faults.reset_after_rate and self._rng.random() < faults.reset_after_rate:
            self.requests[-1].reason = "answer lost: reset after storing"
            _reset(writer)  # stored, but the client never hears it
            return None
        extra = [(b"www-authenticate", b'Bearer error="invalid_token"')] if status == 401 else []
        return _json(status, payload, extra)

    def _ingest(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any], str | None, int]:
        """Check, decode and store one batch: (status, answer, client id, events in the batch)."""
        auth = headers.get("authorization", "")
        token = self._tokens.get(auth[7:]) if auth.lower().startswith("bearer ") else None
        if token is None or token[1] < time.time():
            return 401, {"error": "invalid_token"}, None, 0
        client = self.clients[token[0]]
        problem = self._check_signature(client, headers, body)
        if problem:
            return 401, {"error": problem}, client.client_id, 0
        if headers.get("content-type", "").split(";")[0].strip() != "application/cloudevents-batch+json":
            return 415, {"error": "expected application/cloudevents-batch+json"}, client.client_id, 0
        try:
            raw = _inflate(body) if headers.get("content-encoding") == "gzip" else body
            if self.sink:
                return (
                    *self._sink(client.tenant, headers.get("idempotency-key", ""), raw),
                    client.client_id,
                    0,
                )
            batch = orjson.loads(raw)
        except (OSError, EOFError, zlib.error, orjson.JSONDecodeError, ValueError) as exc:
            return 400, {"error": f"unreadable batch: {exc}"}, client.client_id, 0
        if not isinstance(batch, list):
            return 400, {"error": "a batch is a JSON array"}, client.client_id, 0
        rejected = []
        for index, event in enumerate(batch):
            reason = _invalid(event) or (
                "poison (injected)"
                if isinstance(event, dict) and event.get("id") in self.faults.poison
                else ""
            )
            if reason:
                rejected.append({"index": index, "id": _id_of(event), "reason": reason})
        if rejected:
            return 400, {"error": "invalid events", "rejected": rejected}, client.client_id, len(batch)
        if any(event.get("tenantid") != client.tenant for event in batch):
            self.cross_tenant += 1
            return 403, {"error": "events of another tenant"}, client.client_id, len(batch)
        self._check_key(headers.get("idempotency-key"), batch)
        status, answer = self._store(client.tenant, batch)
        return status, answer, client.client_id, len(batch)

    def _sink(self, tenant: str, key: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        count = raw.count(b'"specversion":')
        record = self.tenants[tenant]
        record.batches += 1
        if key and key in self._keys:
            record.duplicates += count
            record.duplicate_batches += 1
            return 409, {"accepted": 0, "duplicates": count}
        self._keys[key] = key
        record.events.extend([("", "", None, "")] * count)  # counted, not parsed
        return 200, {"accepted": count, "duplicates": 0}

    def _check_signature(self, client: Credentials, headers: dict[str, str], body: bytes) -> str:
        stamp, given = headers.get("x-edge-timestamp", ""), headers.get("x-edge-signature", "")
        if headers.get("x-edge-key-id", client.key_id) != client.key_id:
            return "unknown_key_id"
        if not stamp.isdigit() or not given:
            return "missing_signature"
        now = time.time()
        if abs(now - int(stamp)) > SIGNATURE_WINDOW:
            return "stale_timestamp"
        mac = hmac.new(client.hmac_key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not any(hmac.compare_digest(f"v1={mac}", part) for part in given.split()):
            return "invalid_signature"
        for sig, seen in list(self._signatures.items()):
            if now - seen > 2 * SIGNATURE_WINDOW:
                del self._signatures[sig]
        if given in self._signatures:
            return "replayed_signature"
        self._signatures[given] = now
        return ""

    def _check_key(self, key: str | None, batch: list[dict[str, Any]]) -> None:
        if not key:
            return
        digest = hashlib.sha256("\n".join(str(e["id"]) for e in batch).encode()).hexdigest()
        if self._keys.setdefault(key, digest) != digest:
            self.key_conflicts += 1

    def _store(self, tenant: str, batch: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        record = self.tenants[tenant]
        record.batches += 1
        new = 0
        now = time.time()
        for event in batch:
            key = (event["source"], event["id"])
            if key in self._seen:
                record.duplicates += 1
                continue
            self._seen.add(key)
            new += 1
            seq = int(event["sequence"]) if isinstance(event.get("sequence"), str) else None
            record.events.append((event["source"], event["id"], seq, event["type"]))
            if event["type"] == RESULT_TYPE and isinstance(event.get("data"), dict):
                self.platform.received_result(tenant, event["data"])
            record.arrived[event["id"]] = now
            with contextlib.suppress(KeyError, TypeError, ValueError):
                record.latencies.append((now, now - datetime.fromisoformat(event["time"]).timestamp()))
            if seq is not None:
                last = record.last_sequence.get(event["source"])
                if last is not None and seq <= last:
                    record.order_violations += 1
                else:
                    if last is not None:
                        record.gaps += seq - last - 1
                    record.last_sequence[event["source"]] = seq
        if new == 0:
            record.duplicate_batches += 1
            return 409, {"accepted": 0, "duplicates": len(batch)}
        return 200, {"accepted": new, "duplicates": len(batch) - new}

    async def _set_faults(self, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        try:
            spec = orjson.loads(body or b"{}")
            self.faults.update(spec)
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            return _json(400, {"error": str(exc)})
        if spec.get("revoke_tokens"):
            self.revoke_tokens()
        if spec.get("down_for"):
            self._down_task = asyncio.create_task(self._down_for(float(spec["down_for"])))
        return _json(200, {"ok": True})

    async def _down_for(self, seconds: float) -> None:
        await asyncio.sleep(0.05)  # let this answer go out first
        await self.set_down(True)
        await asyncio.sleep(seconds)
        await self.set_down(False)

    def _log(
        self,
        path: str,
        status: int,
        client: str | None,
        tenant: str | None,
        events: int,
        headers: dict[str, str],
        reason: str,
    ) -> None:
        key = headers.get("idempotency-key")
        self.requests.append(RequestRecord(path, status, client, tenant, events, key, reason, time.time()))


# ---- helpers --------------------------------------------------------------------------------------------


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[h11.Request, bytes] | None:
    head: h11.Request | None = None
    chunks: list[bytes] = []
    size = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(1 << 16)
            if not data and head is None:
                return None
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_BODY:
                raise ConnectionError("request body too large")
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return head, b"".join(chunks)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


def _json(
    status: int, payload: dict[str, Any], extra: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return status, [(b"content-type", b"application/json"), *extra], orjson.dumps(payload)


def _inflate(body: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    out = inflater.decompress(body, MAX_INFLATED)
    if inflater.unconsumed_tail:
        raise ValueError("batch inflates beyond the limit")
    if not inflater.eof:
        raise EOFError("truncated gzip stream")
    return out


def _invalid(event: Any) -> str:
    """Why an item of a batch is not a CloudEvent 1.0 we accept ('' if it is)."""
    if not isinstance(event, dict):
        return "not a JSON object"
    if event.get("specversion") != "1.0":
        return "specversion must be '1.0'"
    for attribute in ("id", "source", "type"):
        value = event.get(attribute)
        if not isinstance(value, str) or not value:
            return f"missing attribute {attribute!r}"
    if "tenantid" not in event:
        return "missing extension 'tenantid'"
    sequence = event.get("sequence")
    if sequence is not None and not (isinstance(sequence, str) and sequence.isdigit()):
        return "sequence must be a decimal string"
    return ""


def _id_of(event: Any) -> str | None:
    return event.get("id") if isinstance(event, dict) and isinstance(event.get("id"), str) else None


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashing proxy or a dropped NAT entry would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def gzip_batch(events: Sequence[dict[str, Any]]) -> bytes:
    """A gzip-compressed JSON array, for tests that talk to the simulator directly."""
    return gzip.compress(orjson.dumps(list(events)), mtime=0)


async def main(
    port: int = 8443,
    tenants: Sequence[str] = ("acme",),
    host: str = "127.0.0.1",
    token_ttl: float = 300.0,
    sink: bool = False,
    scenario: Scenario | None = None,
) -> None:
    """Serve until cancelled, with `Credentials.demo(tenant)` for each tenant (printed at start); with a
    `scenario`, the platform sends its command and deployment and reports their results on stderr."""
    creds = [Credentials.demo(t) for t in tenants]
    sim = CloudSimulator(creds, port=port, host=host, token_ttl=token_ttl, sink=sink)
    await sim.start()
    print(f"cloud simulator on {sim.url}: events {sim.events_url}, tokens {sim.token_url}", flush=True)
    for c in creds:
        print(
            f"  tenant {c.tenant}: client_id={c.client_id} client_secret={c.client_secret}"
            f" hmac_key={c.hmac_key.decode()} key_id={c.key_id}",
            flush=True,
        )
    if scenario is not None:
        sim.platform.on_result = _print_result
        asyncio.get_running_loop().call_later(scenario.after, _play, sim.platform, scenario)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


def _play(platform: Platform, scenario: Scenario) -> None:
    for kind, body in scenario.messages():
        jti = platform.send(scenario.tenant, scenario.gateway, kind, body)
        shown = body.get("version") or f"{body.get('device')}.{body.get('point')} = {body.get('value')}"
        print(
            f"platform: sent {kind} {shown} to {scenario.gateway} for {scenario.tenant} (id {jti[:8]})",
            file=sys.stderr,
            flush=True,
        )


def _print_result(tenant: str, data: dict[str, Any]) -> None:
    reason = f": {data['reason']}" if data.get("reason") else ""
    detail = data.get("detail") or {}
    extra = f" {detail}" if detail and data.get("kind") == "deployment" else ""
    print(
        f"platform: result for {tenant} (id {str(data.get('id'))[:8]}): {data.get('kind')} {data.get('target')}"
        f" -> {data.get('status')}{reason}{extra}",
        file=sys.stderr,
        flush=True,
    )


def _cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--tenants", default="acme", help="comma-separated tenant ids")
    parser.add_argument("--token-ttl", type=float, default=300.0)
    parser.add_argument(
        "--sink", action="store_true", help="count batches without parsing events (benchmarks)"
    )
    parser.add_argument("--scenario", help="JSON of a platform scenario (edge demo): see Scenario")
    args = parser.parse_args(argv)
    tenants = [t for t in args.tenants.split(",") if t]
    scenario = Scenario(**orjson.loads(args.scenario)) if args.scenario else None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            main(
                port=args.port,
                tenants=tenants,
                host=args.host,
                token_ttl=args.token_ttl,
                sink=args.sink,
                scenario=scenario,
            )
        )


if __name__ == "__main__":
    _cli(sys.argv[1:])
