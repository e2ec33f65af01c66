"""Cloud sync's pure parts and seams: wire format, signatures (checked by the simulator), answers, scheduling."""

from __future__ import annotations

import asyncio
import gzip
import random
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from cloud_sync import wire
from cloud_sync._oauth import AsyncOAuth2Client
from cloud_sync.config import CloudSyncConfig, SecretUnavailable, resolve_secret
from cloud_sync.uplink import Circuit, TenantUplink
from edge.sdk.events import StoredEvent
from edge.sdk.modules import Rejected, RetryLater
from edge.sdk.ratelimit import FairScheduler, TokenBucket
from simulators.cloud import CloudSimulator, Credentials
from tests.cloud_harness import telemetry


def _rows(n: int, tenant: str = "acme") -> list[StoredEvent]:
    out = []
    for i in range(1, n + 1):
        e = telemetry(tenant, "inv-1", i)
        out.append(StoredEvent(i, e.id, e.tenant, e.type, e.subject, e.device, e.sequence, e.time, e.body))
    return out


def test_a_batch_is_the_stored_bytes_as_a_json_array_compressed() -> None:
    rows = _rows(3)
    body = wire.encode_batch([r.body for r in rows])
    raw = gzip.decompress(body)
    assert raw == b"[" + b",".join(r.body for r in rows) + b"]"  # never re-serialised
    assert [e["id"] for e in orjson.loads(raw)] == [r.id for r in rows]
    assert wire.encode_batch([r.body for r in rows]) == body  # deterministic (gzip mtime 0)


def test_the_idempotency_key_depends_only_on_the_events() -> None:
    ids = [r.id for r in _rows(5)]
    assert wire.idempotency_key(ids) == wire.idempotency_key(list(ids))
    assert wire.idempotency_key(ids) != wire.idempotency_key(ids[1:])
    assert wire.idempotency_key(ids) != wire.idempotency_key(list(reversed(ids)))
    assert len(wire.idempotency_key(ids)) == 64


async def test_the_simulator_verifies_signatures_and_refuses_tampering_staleness_and_replays() -> None:
    creds = Credentials.demo("acme")
    async with CloudSimulator([creds]) as sim, httpx.AsyncClient() as http:
        token = (
            await http.post(
                sim.token_url,
                data={"grant_type": "client_credentials"},
                auth=(creds.client_id, creds.client_secret),
            )
        ).json()["access_token"]
        body = wire.encode_batch([r.body for r in _rows(2)])

        async def post(
            payload: bytes,
            *,
            key: bytes = creds.hmac_key,
            skew: int = 0,
            headers: dict[str, str] | None = None,
        ) -> httpx.Response:
            signed = headers or wire.headers(
                key=key, key_id="k1", timestamp=int(time.time()) + skew, body=body, idem_key="k", count=2
            )
            return await http.post(
                sim.events_url, content=payload, headers={**signed, "Authorization": f"Bearer {token}"}
            )

        good = wire.headers(
            key=creds.hmac_key, key_id="k1", timestamp=int(time.time()), body=body, idem_key="k", count=2
        )
        assert (await post(body, headers=good)).status_code == 200
        tampered = bytearray(body)
        tampered[-9] ^= 1
        assert (await post(bytes(tampered))).json()["error"] == "invalid_signature"
        assert (await post(body, key=b"not-the-key")).json()["error"] == "invalid_signature"
        assert (await post(body, skew=-400)).json()["error"] == "stale_timestamp"
        replay = await post(body, headers=good)
        assert replay.status_code == 401 and replay.json()["error"] == "replayed_signature"
        fresh = await post(body, skew=1)  # signed afresh: accepted, but every event is a duplicate
        assert fresh.status_code == 409
        # sample time -> stored, for the benchmarks: the two stored events, not the duplicates
        latency = (await http.get(f"{sim.url}/_sim/latency", params={"tenant": "acme", "since": 0})).json()
        assert latency["n"] == 2 and 0 <= latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
        assert (await http.get(f"{sim.url}/_sim/latency", params={"tenant": "nobody"})).status_code == 404
    assert sim.unique() == 2


def test_rejections_are_read_by_index_or_id_and_unknown_ones_ignored() -> None:
    rows = _rows(4)
    answer = orjson.dumps(
        {"rejected": [{"index": 1, "reason": "bad unit"}, {"id": rows[3].id}, {"index": 99}, {"id": "nope"}]}
    )
    assert wire.rejections(answer, rows) == {2: "bad unit", 4: "refused by the receiver"}
    assert wire.rejections(b"<html>bad request</html>", rows) == {}
    assert wire.retry_after("7", 0) == 7.0
    assert wire.retry_after("Wed, 21 Oct 2015 07:28:30 GMT", 1445412500.0) == pytest.approx(10.0)
    assert wire.retry_after("soon", 0) is None


def test_secrets_are_references_and_errors_never_show_a_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_T_SECRET", "s3cr3t-value")
    assert resolve_secret("env:EDGE_T_SECRET") == b"s3cr3t-value"
    (tmp_path / "key").write_bytes(b"file-secret\n")
    assert resolve_secret(f"file:{tmp_path / 'key'}") == b"file-secret"
    with pytest.raises(SecretUnavailable, match="EDGE_T_MISSING is not set"):
        resolve_secret("env:EDGE_T_MISSING")
    with pytest.raises(Exception, match="client_secret"):
        CloudSyncConfig.model_validate(
            {
                "endpoint": "http://x/e",
                "token_url": "http://x/t",
                "tenants": {"a": {"client_id": "a", "client_secret": "s3cr3t-value", "hmac_key": "env:K"}},
            }
        )
    with pytest.raises(Exception, match="no endpoint"):
        CloudSyncConfig.model_validate(
            {
                "token_url": "http://x/t",
                "tenants": {"a": {"client_id": "a", "client_secret": "env:S", "hmac_key": "env:K"}},
            }
        )


async def test_weighted_fair_turns_share_slots_by_weight_and_let_a_newcomer_in_at_once() -> None:
    scheduler = FairScheduler(1)
    for tenant, weight in (("a", 1.0), ("c", 3.0), ("b", 1.0)):
        scheduler.add(tenant, weight)
    order: list[str] = []

    async def backlog(tenant: str, rounds: int) -> None:
        for _ in range(rounds):
            async with scheduler.turn(tenant, 100):
                order.append(tenant)
                await asyncio.sleep(0.001)

    a = asyncio.create_task(backlog("a", 200))
    c = asyncio.create_task(backlog("c", 200))
    await asyncio.sleep(0.1)
    window = Counter(order[-40:])
    assert 2.0 <= window["c"] / window["a"] <= 4.5  # about 3:1 while both are backlogged
    before = len(order)
    await backlog("b", 1)  # a fresh tenant waits for at most the upload in flight
    assert order.index("b") - before <= 2
    a.cancel()
    c.cancel()
    await asyncio.gather(a, c, return_exceptions=True)


async def test_a_token_bucket_holds_the_rate_for_any_batch_size() -> None:
    bucket = TokenBucket(rate=2000, burst=500)
    started = time.monotonic()
    for _ in range(6):
        await bucket.take(500)
    await bucket.take(1000)  # larger than the bucket: allowed once full, leaves debt
    await bucket.take(1)
    elapsed = time.monotonic() - started
    assert (4000 - 500) / 2000 * 0.9 <= elapsed <= (4000 - 500) / 2000 + 0.5


def test_a_ten_minute_outage_costs_at_most_about_twenty_attempts() -> None:
    counts = []
    for seed in range(200):
        circuit = Circuit(1.0, 60.0, 600.0, random.Random(seed))
        waited, attempts = 0.0, 0
        while waited < 600:
            attempts += 1
            waited += circuit.failure("down")
        counts.append(attempts)
    assert sum(counts) / len(counts) <= 20  # reliability T04: base 1 s, cap 60 s, with jitter
    assert len(set(counts)) > 1


def _uplink(handler: httpx.MockTransport) -> TenantUplink:
    client = AsyncOAuth2Client(
        client_id="acme",
        client_secret="s",
        token_endpoint="http://cloud/token",
        grant_type="client_credentials",
        transport=handler,
    )
    return TenantUplink(
        "acme",
        endpoint="http://cloud/events",
        client=client,
        hmac_key=b"k",
        hmac_key_id="k1",
        circuit=Circuit(0.01, 0.05, 1.0),
    )


def _receiver(bad: set[str], max_events: int = 1000) -> tuple[httpx.MockTransport, list[int]]:
    """A receiver that refuses a batch holding a bad event without saying which, and large batches (413)."""
    sizes: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer", "expires_in": 300})
        events = orjson.loads(gzip.decompress(request.content))
        sizes.append(len(events))
        if len(events) > max_events:
            return httpx.Response(413, text="too large")
        if any(e["id"] in bad for e in events):
            return httpx.Response(400, text="schema violation somewhere")
        return httpx.Response(200, json={"accepted": len(events)})

    return httpx.MockTransport(handle), sizes


async def test_an_unnamed_bad_event_is_isolated_by_halving_and_large_batches_are_split() -> None:
    rows = _rows(16)
    transport, sizes = _receiver({rows[5].id})
    uplink = _uplink(transport)
    outcome = await uplink.deliver(rows)
    assert isinstance(outcome, Rejected) and list(outcome.reasons) == [rows[5].position]
    assert "HTTP 400" in outcome.reasons[rows[5].position]
    assert len(sizes) <= 2 * 4 + 1 and uplink.stats.events == 15

    transport, sizes = _receiver(set(), max_events=5)
    uplink = _uplink(transport)
    assert await uplink.deliver(rows) is None
    assert uplink.stats.events == 16 and max(s for s in sizes if s <= 5) <= 5
    await uplink.close()


async def test_answers_that_are_not_the_batchs_fault_never_make_dead_letters() -> None:
    for status in (500, 503, 403, 404, 429):
        transport = httpx.MockTransport(
            lambda r, s=status: (
                httpx.Response(200, json={"access_token": "t", "expires_in": 300})
                if r.url.path == "/token"
                else httpx.Response(s, text="nope")
            )
        )
        uplink = _uplink(transport)
        with pytest.raises(RetryLater):
            await uplink.deliver(_rows(3))
        await uplink.close()
