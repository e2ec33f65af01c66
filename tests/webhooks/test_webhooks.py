"""Webhooks end to end: signed CloudEvents from a real outbox to real HTTP receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import itertools
import random
import time
from pathlib import Path

import httpx
import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from edge.outbox import RetentionPolicy
from edge.outbox.retention import Retention
from edge.sdk.events import DEVICE_STATUS, make_event
from edge.sdk.tenancy import tenant_scope
from edge.webhooks import DeliveryPolicy, DestinationPolicy, SubscriptionNotFound, WebhookStore
from edge.webhooks.guard import DestinationRefused, GuardedTransport, embedded_ipv4
from edge.webhooks.signing import new_secret, sign
from simulators.webhook_receiver import WebhookReceiver
from tests.helpers import until
from tests.webhook_harness import ACME, GLOBEX, rig


@pytest.fixture
async def receiver() -> object:
    r = WebhookReceiver()
    await r.start()
    yield r
    await r.stop()


def _headers(r: object) -> dict[str, str]:
    return r.headers  # type: ignore[attr-defined,no-any-return]


# ---- signatures ------------------------------------------------------------------------------------------


def test_signature_matches_the_published_spec_vector() -> None:
    # The test vector of the Standard Webhooks specification (and of its reference libraries).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_random_payloads_verify_with_the_official_library_and_tampering_is_caught() -> None:
    rng = random.Random(7)
    for _ in range(300):
        secret = new_secret()
        assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 64
        body = orjson.dumps({"data": rng.randbytes(rng.randint(0, 512)).hex(), "n": rng.random()})
        msg_id, now = f"msg_{rng.getrandbits(64):x}", int(time.time())
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(now)}
        headers["webhook-signature"] = sign(secret, msg_id, now, body)
        Webhook(secret).verify(body, headers)  # raises on a mismatch
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body.replace(b'"n"', b'"m"'), headers)
    stale = {"webhook-id": "m", "webhook-timestamp": str(int(time.time()) - 600)}
    stale["webhook-signature"] = sign(secret, "m", int(stale["webhook-timestamp"]), b"{}")
    with pytest.raises(WebhookVerificationError):  # outside the 5-minute tolerance: a replay is refused
        Webhook(secret).verify(b"{}", stale)


# ---- destination policy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "0.0.0.0", "::1", "fe80::1",
     "fd00::5", "::ffff:127.0.0.1", "224.0.0.1",
     # shared address space (a cloud metadata service: 100.100.100.200), site-local, multicast, reserved ::/8
     "100.64.0.1", "100.100.100.200", "fec0::1", "ff0e::1", "::7f00:1", "64:ff9b:1::a9fe:a9fe",
     # IPv6 that delivers to an internal IPv4: 6to4, NAT64, Teredo (client 127.0.0.1 obfuscated)
     "2002:7f00:1::1", "2002:a9fe:a9fe::1", "2002:6440:1::1", "64:ff9b::a9fe:a9fe", "64:ff9b::6464:64c8",
     "2001:0:5db8:d822:0:0:80ff:fffe"],
)  # fmt: skip
def test_internal_addresses_are_refused_unless_allowed(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert DestinationPolicy().refusal(ip) is not None
    with pytest.raises(ValueError, match="refused"):
        DestinationPolicy().check_url(f"http://{'[' + address + ']' if ':' in address else address}/x")
    allow = "::/0" if ip.version == 6 and not address.startswith("::ffff") else "0.0.0.0/0"
    assert DestinationPolicy([allow]).refusal(ip) is None


def test_public_addresses_and_bad_urls() -> None:
    policy = DestinationPolicy()
    assert policy.refusal(ipaddress.ip_address("93.184.216.34")) is None
    assert policy.refusal(ipaddress.ip_address("2606:4700::1111")) is None
    for public in ("2002:5db8:d822::1", "64:ff9b::5db8:d822", "::ffff:93.184.216.34"):  # 6to4, NAT64, mapped
        assert policy.refusal(ipaddress.ip_address(public)) is None, public
    assert embedded_ipv4(ipaddress.ip_address("2001:0:5db8:d822:0:0:80ff:fffe")) == [
        ipaddress.IPv4Address("93.184.216.34"),  # the Teredo server
        ipaddress.IPv4Address("127.0.0.1"),  # and its client, obfuscated in the last 32 bits
    ]
    for url, why in [("ftp://example.com/x", "scheme"), ("http:///x", "host"), ("https://u:p@example.com", "credentials"), ("https://ex\x19ample.com", "not a URL")]:  # fmt: skip
        with pytest.raises(ValueError, match=why):
            policy.check_url(url)


async def test_a_name_resolving_to_loopback_is_refused_at_connect_time(
    tmp_path: Path, receiver: object
) -> None:
    """`localhost` passes the URL check (it is a name) but resolves to 127.0.0.1: refused when connecting."""
    async with rig(tmp_path, allow=()) as r:
        sub_id, _ = r.add("acme", f"http://localhost:{receiver.port}/hook")  # type: ignore[attr-defined]
        await r.emit("acme")
        with tenant_scope(ACME):
            await until(lambda: bool(r.store.dead_letters(sub_id)))
            reason = r.store.dead_letters(sub_id)[0].reason
    assert "refused" in reason and "loopback" in reason
    assert receiver.received == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("internal", ["100.100.100.200", "64:ff9b::a9fe:a9fe", "2002:a00:1::1"])
async def test_a_name_resolving_to_an_internal_address_is_refused_through_the_resolver_seam(
    internal: str, receiver: object
) -> None:
    """Any one internal answer refuses the name, even beside a public one (no DNS: the resolver is given)."""

    async def resolve(host: str, port: int) -> list[str]:
        return {"metadata.test": ["93.184.216.34", internal], "hook.test": ["127.0.0.1"]}[host]

    transport = GuardedTransport(DestinationPolicy(["127.0.0.0/8"]), resolver=resolve)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        with pytest.raises(DestinationRefused, match=f"metadata.test refused: {internal}"):
            await client.post("http://metadata.test/latest", content=b"{}")
        answered = await client.post(f"http://hook.test:{receiver.port}/hook", content=b"{}")  # type: ignore[attr-defined]
    assert answered.status_code < 500 and len(receiver.received) == 1  # type: ignore[attr-defined]


# ---- delivery ------------------------------------------------------------------------------------------------


async def test_deliveries_are_signed_cloudevents_of_the_own_tenant_only(tmp_path: Path) -> None:
    a, b = WebhookReceiver(), WebhookReceiver()
    await a.start()
    await b.start()
    async with rig(tmp_path) as r:
        _, a.secret = r.add("acme", a.url)
        _, b.secret = r.add("globex", b.url)
        acme_ids = [await r.emit("acme") for _ in range(5)]
        globex_ids = [await r.emit("globex") for _ in range(3)]
        await until(lambda: len(a.accepted()) == 5 and len(b.accepted()) == 3)
        await asyncio.sleep(0.3)  # nothing else arrives
    await a.stop()
    await b.stop()
    assert [_headers(x)["webhook-id"] for x in a.received] == acme_ids
    assert [_headers(x)["webhook-id"] for x in b.received] == globex_ids
    for got in a.received:
        headers = _headers(got)
        assert headers["content-type"].startswith("application/cloudevents+json")
        Webhook(a.secret).verify(got.body, headers)  # the official library agrees
        event = orjson.loads(got.body)
        assert event["specversion"] == "1.0" and event["tenantid"] == "acme"
        assert event["id"] == headers["webhook-id"]
        with pytest.raises(WebhookVerificationError):
            Webhook(b.secret).verify(got.body, headers)  # another subscription's secret does not verify


async def test_retries_keep_the_id_back_off_and_deliver(tmp_path: Path, receiver: object) -> None:
    receiver.faults.fail_first = 2  # type: ignore[attr-defined]
    policy = DeliveryPolicy(timeout=2.0, max_attempts=5, retry_initial=0.1, retry_cap=1.0)
    async with rig(tmp_path, policy) as r:
        _, receiver.secret = r.add("acme", receiver.url)  # type: ignore[attr-defined]
        event_id = await r.emit("acme")
        await until(lambda: len(receiver.accepted()) == 1)  # type: ignore[attr-defined]
    attempts = receiver.received  # type: ignore[attr-defined]
    assert [a.status for a in attempts] == [503, 503, 204]
    assert {_headers(a)["webhook-id"] for a in attempts} == {event_id}
    assert all(a.verified for a in attempts)  # each attempt signed afresh with its own timestamp
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    assert 0.04 <= gaps[0] <= 0.5 and gaps[1] >= 0.05  # backoff: jittered, ceiling doubling from 0.1 s


async def test_dead_letters_after_max_attempts_then_replay(tmp_path: Path, receiver: object) -> None:
    receiver.faults.status = 500  # type: ignore[attr-defined]
    async with rig(tmp_path) as r:
        sub_id, receiver.secret = r.add("acme", receiver.url)  # type: ignore[attr-defined]
        first = await r.emit("acme")
        second = await r.emit("acme")
        with tenant_scope(ACME):
            await until(lambda: len(r.store.dead_letters(sub_id)) == 2)
            letters = r.store.dead_letters(sub_id)
        assert [d.event_id for d in letters] == [first, second]
        assert "gave up after 3 attempts" in letters[0].reason and "HTTP 500" in letters[0].reason
        assert len(receiver.received) == 6  # type: ignore[attr-defined]
        receiver.faults.status = None  # type: ignore[attr-defined]  # the receiver is fixed
        with tenant_scope(GLOBEX), pytest.raises(SubscriptionNotFound):
            r.store.replay(sub_id)  # another tenant cannot touch it
        with tenant_scope(ACME):
            assert r.store.replay(sub_id) == 2
            await until(lambda: not r.store.dead_letters(sub_id))
    ids = [_headers(a)["webhook-id"] for a in receiver.accepted()]  # type: ignore[attr-defined]
    assert ids == [first, second]  # replayed with the ids of the original attempts


async def test_deliveries_resume_after_a_restart(tmp_path: Path, receiver: object) -> None:
    receiver.faults.stall = True  # type: ignore[attr-defined]
    policy = DeliveryPolicy(timeout=0.3, max_attempts=50, retry_initial=0.05, retry_cap=0.1)
    async with rig(tmp_path, policy) as r:
        _, receiver.secret = r.add("acme", receiver.url)  # type: ignore[attr-defined]
        ids = [await r.emit("acme") for _ in range(3)]
        await asyncio.sleep(0.5)
    receiver.faults.stall = False  # type: ignore[attr-defined]
    async with rig(tmp_path, policy):
        await until(lambda: len(receiver.accepted()) == 3)  # type: ignore[attr-defined]
    assert [_headers(a)["webhook-id"] for a in receiver.accepted()] == ids  # type: ignore[attr-defined]


async def test_a_dead_endpoint_does_not_delay_a_healthy_one(tmp_path: Path) -> None:
    dead, healthy = WebhookReceiver(), WebhookReceiver()
    dead.faults.stall = True
    await dead.start()
    await healthy.start()
    policy = DeliveryPolicy(timeout=5.0, max_attempts=5, retry_initial=0.05, retry_cap=0.2)
    async with rig(tmp_path, policy) as r:
        r.add("acme", dead.url)
        _, healthy.secret = r.add("acme", healthy.url)
        await asyncio.sleep(0.05)
        latencies = []
        for _ in range(20):
            emitted = time.monotonic()
            count = len(healthy.accepted())
            await r.emit("acme")
            await until(lambda c=count: len(healthy.accepted()) > c, within=2.0)
            latencies.append(time.monotonic() - emitted)
    await dead.stop()
    await healthy.stop()
    assert len(dead.received) == 0  # it never answered: still on the first attempt of its first event
    assert max(latencies) < 0.5, latencies


async def test_redirects_are_not_followed(tmp_path: Path, receiver: object) -> None:
    target = WebhookReceiver()
    await target.start()
    receiver.faults.status = 307  # type: ignore[attr-defined]
    receiver.faults.location = target.url  # type: ignore[attr-defined]
    async with rig(tmp_path) as r:
        sub_id, _ = r.add("acme", receiver.url)  # type: ignore[attr-defined]
        await r.emit("acme")
        with tenant_scope(ACME):
            await until(lambda: bool(r.store.dead_letters(sub_id)))
            reason = r.store.dead_letters(sub_id)[0].reason
    await target.stop()
    assert target.received == []
    assert "307" in reason and "not followed" in reason


async def test_filters_by_site_device_and_point(tmp_path: Path, receiver: object) -> None:
    async with rig(tmp_path) as r:
        _, receiver.secret = r.add(  # type: ignore[attr-defined]
            "acme", receiver.url, sites=["roof"], devices=["inv-02"], points=["ac_power"]
        )
        await r.emit("acme", device="inv-01", points={"ac_power": 1.0})  # other device
        await r.emit("acme", site="cellar", device="inv-02", points={"ac_power": 2.0})  # other site
        await r.emit("acme", device="inv-02", points={"dc_voltage": 3.0})  # other point
        wanted = await r.emit("acme", device="inv-02", points={"ac_power": 4.0, "dc_voltage": 5.0})
        await until(lambda: len(receiver.accepted()) == 1)  # type: ignore[attr-defined]
        await asyncio.sleep(0.3)
    (got,) = receiver.received  # type: ignore[attr-defined]
    assert got.headers["webhook-id"] == wanted and got.verified
    assert orjson.loads(got.body)["data"]["points"] == {
        "ac_power": {"value": 4.0, "unit": None, "quality": "good"}
    }


async def test_410_gone_pauses_the_subscription(tmp_path: Path, receiver: object) -> None:
    receiver.faults.status = 410  # type: ignore[attr-defined]
    async with rig(tmp_path) as r:
        sub_id, _ = r.add("acme", receiver.url)  # type: ignore[attr-defined]
        await r.emit("acme")
        with tenant_scope(ACME):
            await until(lambda: r.store.get(sub_id).state == "paused")
            assert "410" in (r.store.get(sub_id).state_reason or "")
        await asyncio.sleep(0.3)
        assert len(receiver.received) == 1  # type: ignore[attr-defined]


async def test_changes_are_picked_up_by_the_running_dispatcher(tmp_path: Path, receiver: object) -> None:
    async with rig(tmp_path, reload=0.5) as r:
        other = WebhookStore(tmp_path / "outbox.db", DestinationPolicy(["127.0.0.1/32"]))  # as the CLI does
        with tenant_scope(ACME):
            created = other.add(receiver.url)  # type: ignore[attr-defined]
        receiver.secret = created.secret  # type: ignore[attr-defined]
        before = await r.emit("acme")  # committed after the subscription was created: delivered
        started = time.monotonic()
        await until(lambda: len(receiver.accepted()) == 1, within=3.0)  # type: ignore[attr-defined]
        took = time.monotonic() - started
        assert took < 2.0 and receiver.accepted()[0].headers["webhook-id"] == before  # type: ignore[attr-defined]
        with tenant_scope(ACME):
            other.remove(created.subscription.id)
        await asyncio.sleep(0.8)
        with tenant_scope(ACME):
            assert created.subscription.consumer not in r.outbox.holders()
        await r.emit("acme")
        await asyncio.sleep(0.3)
        other.close()
    assert len(receiver.received) == 1  # type: ignore[attr-defined]


def test_store_is_tenant_scoped(tmp_path: Path) -> None:
    with WebhookStore(tmp_path / "o.db", DestinationPolicy(["127.0.0.1/32"]), max_per_tenant=2) as store:
        with tenant_scope(ACME):
            created = store.add("http://127.0.0.1:9/x", types=["org.edgegw.telemetry"])
            store.add("http://127.0.0.1:9/y")
            with pytest.raises(ValueError, match="most allowed"):
                store.add("http://127.0.0.1:9/z")
        with tenant_scope(GLOBEX):
            assert store.list() == []
            for action in (
                store.get,
                store.remove,
                store.dead_letters,
                store.signing_secrets,
                store.rotate_secret,
            ):
                with pytest.raises(SubscriptionNotFound):
                    action(created.subscription.id)
        with tenant_scope(ACME):
            assert [s.url for s in store.list()] == ["http://127.0.0.1:9/x", "http://127.0.0.1:9/y"]
            assert "whsec_" not in repr(store.list())
            assert store.signing_secrets(created.subscription.id) == [created.secret]
            store.remove(created.subscription.id)
            assert len(store.list()) == 1


async def test_a_rotated_secret_signs_beside_the_old_one_during_the_grace_period(
    tmp_path: Path, receiver: object
) -> None:
    async with rig(tmp_path) as r:
        sub_id, old = r.add("acme", receiver.url)  # type: ignore[attr-defined]
        with tenant_scope(ACME):
            new = r.store.rotate_secret(sub_id, grace=3600).secret
            expired = r.store.signing_secrets(sub_id, now=time.time() + 3601)
        await asyncio.sleep(0.3)  # the dispatcher restarts the subscription with both secrets
        await r.emit("acme")
        await until(lambda: len(receiver.received) == 1)  # type: ignore[attr-defined]
    (got,) = receiver.received  # type: ignore[attr-defined]
    assert len(got.headers["webhook-signature"].split()) == 2
    Webhook(old).verify(got.body, got.headers)  # a receiver not yet switched still verifies
    Webhook(new).verify(got.body, got.headers)
    assert expired == [new]  # after the grace period only the new secret signs


async def test_retry_after_is_honoured(tmp_path: Path, receiver: object) -> None:
    receiver.faults.fail_first = 1  # type: ignore[attr-defined]
    receiver.faults.retry_after = 0.6  # type: ignore[attr-defined]
    policy = DeliveryPolicy(timeout=2.0, max_attempts=3, retry_initial=0.01, retry_cap=5.0)
    async with rig(tmp_path, policy) as r:
        _, receiver.secret = r.add("acme", receiver.url)  # type: ignore[attr-defined]
        await r.emit("acme")
        await until(lambda: len(receiver.accepted()) == 1)  # type: ignore[attr-defined]
    first, second = receiver.received  # type: ignore[attr-defined]
    assert first.status == 503 and 0.6 <= second.at - first.at < 1.5


async def test_the_outbox_keeps_rows_until_every_subscription_passed_them(
    tmp_path: Path, receiver: object
) -> None:
    retention = {"acme": RetentionPolicy(keep_delivered=0.0)}
    async with rig(tmp_path, retention=retention) as r:
        sub_id, receiver.secret = r.add("acme", receiver.url)  # type: ignore[attr-defined]
        with tenant_scope(ACME):
            r.store.set_state(sub_id, "paused", "maintenance")
        await asyncio.sleep(0.3)
        for _ in range(3):
            await r.emit("acme")
        sweeper = Retention(r.outbox, [ACME, GLOBEX], "gw-test")
        await sweeper.sweep()
        with tenant_scope(ACME):
            assert await r.outbox.count() == 3  # the paused subscription has not had them
            r.store.set_state(sub_id, "active")
        await until(lambda: len(receiver.accepted()) == 3)  # type: ignore[attr-defined]
        await asyncio.sleep(0.4)  # the cursor is persisted with the next commit or idle flush
        await sweeper.sweep()
        with tenant_scope(ACME):
            assert await r.outbox.count() == 0


async def test_filters_by_event_type(tmp_path: Path, receiver: object) -> None:
    async with rig(tmp_path) as r:
        _, receiver.secret = r.add("acme", receiver.url, types=[DEVICE_STATUS])  # type: ignore[attr-defined]
        await r.emit("acme")  # telemetry: not subscribed
        status = make_event(
            type=DEVICE_STATUS,
            source="/gw-test/test",
            subject="roof/inv-01",
            tenant="acme",
            time=time.time(),
            data={"site": "roof", "device": "inv-01", "status": "down", "reason": "timeout"},
        )
        with tenant_scope(ACME):
            await r.outbox.append_durable(status)
        await until(lambda: len(receiver.accepted()) == 1)  # type: ignore[attr-defined]
        await asyncio.sleep(0.2)
    (got,) = receiver.received  # type: ignore[attr-defined]
    assert got.headers["webhook-id"] == status.id and orjson.loads(got.body)["type"] == DEVICE_STATUS
