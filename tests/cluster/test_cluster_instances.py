"""What any instance offers in cluster mode (docs/scale.md): writes, webhook subscriptions, isolated modules.

Two gateways in cluster mode (in-process, each on its own API port, as two `edge run --instance` would be)
share a PostgreSQL outbox, Mosquitto and the Modbus simulator. A write through either API reaches the
device through its owner, which executes it and answers; a refusal keeps its reason and status; a device
whose lease is held by an instance that no longer answers gets a bounded 504 naming the device. A webhook
subscription made through one instance is listed by the other and delivers from the tenant's leader. An
isolated module (a sidecar process per instance) receives a tenant's events on its leader only, and on the
new leader once the old one stopped."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from bench.postgres import PostgresServer
from edge.cluster import LeaseStore, connect
from edge.gateway import Gateway
from simulators.oidc import running
from simulators.webhook_receiver import WebhookReceiver
from tests.api_harness import LoopThread, api_section
from tests.cluster.rig import ClusterRig
from tests.e2e import load
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port, wait_until

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]

DEVICES = 6  # inv-01 .. inv-06; the odd ones are acme's
GHOST = "inv-05"  # its lease held by an instance that is gone (it never renews, never answers)
ACME = ["inv-01", "inv-03"]


@dataclasses.dataclass
class Pair:
    loop: LoopThread
    gateways: dict[str, Gateway]
    mint: Any
    dsn: str
    password: str

    def url(self, name: str) -> str:
        api = self.gateways[name].api
        assert api is not None
        return f"http://127.0.0.1:{api.port}"

    def owner(self, device: str) -> str | None:
        held = [n for n, gw in self.gateways.items() if any(k[2] == device for k in gw.pollers)]
        return held[0] if len(held) == 1 else None

    def seen(self) -> list[tuple[str, int]]:
        """(device, sequence) of every event the raw sidecar echoed, all instances together."""
        with psycopg.connect(self.dsn, password=self.password) as db:
            rows = db.execute("SELECT body FROM edge.outbox WHERE type = 'org.example.raw.seen'").fetchall()
        data = [orjson.loads(bytes(r[0]))["data"] for r in rows]
        return [(d["device"], d["sequence"]) for d in data]

    def results(self, request_id: str) -> list[dict[str, Any]]:
        """The command results stored in the shared outbox for one (forwarded) write."""
        with psycopg.connect(self.dsn, password=self.password) as db:
            rows = db.execute(
                "SELECT body FROM edge.outbox WHERE type = 'org.edgegw.command.result'"
            ).fetchall()
        found = [orjson.loads(bytes(r[0]))["data"] for r in rows]
        return [d for d in found if str(d["request_id"]).startswith(f"{request_id}~")]


@pytest.fixture
def pair(
    tmp_path: Path, postgres: PostgresServer, mosquitto: MosquittoProcess, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pair]:
    monkeypatch.setenv("EDGE_CLUSTER_PASSWORD", postgres.password)
    with running_pair(tmp_path, postgres, mosquitto) as started:
        yield started


@contextlib.contextmanager
def running_pair(
    tmp_path: Path, postgres: PostgresServer, mosquitto: MosquittoProcess, modules: str = ""
) -> Iterator[Pair]:
    """Instances a and b (EDGE_CLUSTER_PASSWORD set by the caller); `modules`: more configuration, whose
    modules acme is entitled to (each module's name is also its entitlement flag)."""
    dsn = postgres.create_database(f"writes_{uuid.uuid4().hex[:8]}")
    sim = SimulatorProcess(free_port(), DEVICES, ["--sim-time", "12:00"])
    sim.start()
    loop = LoopThread()
    issuing = running(0, ("acme", "globex"))
    issuer = loop.run(issuing.__aenter__())
    rig = ClusterRig(tmp_path, dsn, postgres.password, mosquitto.port, sim.port, DEVICES, shared_outbox=True)
    with rig.config.open("a") as f:
        f.write(api_section(issuer.issuer, 0))
        f.write('[webhooks]\nallow_networks = ["127.0.0.1/32"]\nreload_interval = 0.3\n')
    if modules:
        flags = ", ".join(f'"{m}"' for m in re.findall(r'^name = "([^"]+)"', modules, re.MULTILINE))
        text = rig.config.read_text()
        rig.config.write_text(
            text.replace('id = "acme"\nentitlements = []', f'id = "acme"\nentitlements = [{flags}]')
        )
        with rig.config.open("a") as f:
            f.write(modules)
    loaded, registry = load(rig.config)

    async def ghost_lease() -> None:  # before anyone starts: the ghost holds inv-05 for 60 s
        db = await connect(dsn, postgres.password, 10.0)
        try:
            leases = LeaseStore(db, rig.cluster)
            await leases.create_schema()
            assert await leases.claim("device", [GHOST], "ghost", "ghost-token", 60.0)
        finally:
            await db.close()

    async def make(name: str) -> Gateway:
        return Gateway(dataclasses.replace(loaded, instance=name), registry)

    loop.run(ghost_lease())
    gateways = {name: loop.run(make(name)) for name in ("a", "b")}
    try:
        for gw in gateways.values():
            loop.run(gw.start())
        yield Pair(loop, gateways, issuer.mint, dsn, postgres.password)
    finally:
        for name in list(gateways):
            loop.run(gateways.pop(name).stop(), timeout=60)
        loop.run(issuing.__aexit__(None, None, None))
        loop.close()
        sim.stop()


def test_a_write_through_any_instance_reaches_the_device_through_its_owner(pair: Pair) -> None:
    wanted = {f"inv-{i:02d}" for i in range(1, DEVICES + 1)} - {GHOST}
    wait_until(
        lambda: all(pair.owner(d) for d in wanted), within=30, what="every device polled by one instance"
    )
    operator = {"Authorization": f"Bearer {pair.mint(tenant='acme', role='operator')}"}
    for device in ACME:
        owner = pair.owner(device)
        assert owner is not None
        writer = "a" if owner == "b" else "b"
        value = 30 + int(device[-1])
        with httpx.Client(base_url=pair.url(writer), headers=operator, timeout=30.0) as http:
            url = f"/v1/devices/{device}/points/power_limit/value"
            done = http.put(url, json={"value": value, "id": f"rest-{device}"})
            assert done.status_code == 200, done.text
            assert done.json()["ok"] is True and done.json()["request_id"] == f"rest-{device}"
            refused = http.put(f"/v1/devices/{device}/points/ac_power/value", json=5)
            assert refused.status_code == 422 and "not writable" in refused.json()["detail"], refused.text
        with httpx.Client(base_url=pair.url(owner), headers=operator, timeout=30.0) as http:
            wait_until(
                lambda d=device, v=value, h=http: (
                    h.get(f"/v1/devices/{d}/points/power_limit").json()["value"] == v
                ),
                within=10,
                what=f"{device}'s limit read back by its owner {owner}",
            )
        stored = pair.results(f"rest-{device}")  # the owner executed it once and recorded it once
        assert [(r["device"], r["value"], r["ok"]) for r in stored] == [(device, value, True)]
        assert pair.gateways[owner].stats.commands_accepted >= 1

    # the ghost's device: leased to an instance that no longer answers; a bounded wait, then 504 naming it
    assert pair.owner(GHOST) is None
    forwarder = pair.gateways["a"].commands.forwarder if pair.gateways["a"].commands else None
    assert forwarder is not None
    forwarder.timeout = 2.0
    with httpx.Client(base_url=pair.url("a"), headers=operator, timeout=30.0) as http:
        started = time.monotonic()
        lost = http.put(f"/v1/devices/{GHOST}/points/power_limit/value", json={"value": 50})
        waited = time.monotonic() - started
    assert lost.status_code == 504, lost.text
    assert f"no instance answered the write to roof/{GHOST}.power_limit within 2 s" in lost.json()["detail"]
    assert 1.9 < waited < 6.0


def test_a_webhook_made_through_any_instance_is_shared_and_delivers_from_the_leader(pair: Pair) -> None:
    leader = wait_until(
        lambda: next((n for n, gw in pair.gateways.items() if "acme" in gw.leading), None),
        within=30,
        what="a leader for acme",
    )
    other = "a" if leader == "b" else "b"
    receiver = WebhookReceiver()
    pair.loop.run(receiver.start())
    operator = {"Authorization": f"Bearer {pair.mint(tenant='acme', role='operator')}"}
    try:
        with httpx.Client(base_url=pair.url(other), headers=operator, timeout=30.0) as http:
            made = http.post("/v1/webhooks", json={"url": receiver.url, "types": ["org.edgegw.telemetry"]})
            assert made.status_code == 201, made.text
        created = made.json()
        with httpx.Client(base_url=pair.url(leader), headers=operator, timeout=30.0) as http:
            listed = http.get("/v1/webhooks").json()
            assert [s["id"] for s in listed] == [created["id"]]  # one list, whichever instance answers
        wait_until(lambda: len(receiver.accepted()) >= 3, within=20, what="deliveries from acme's leader")
        verifier = Webhook(created["secret"])  # the Standard Webhooks SDK, not our code
        for delivery in receiver.accepted()[:3]:
            event = verifier.verify(delivery.body, delivery.headers)
            assert event["tenantid"] == "acme" and event["type"] == "org.edgegw.telemetry"
        with httpx.Client(base_url=pair.url(leader), headers=operator, timeout=30.0) as http:
            assert http.delete(f"/v1/webhooks/{created['id']}").status_code == 204
        with httpx.Client(base_url=pair.url(other), headers=operator, timeout=30.0) as http:
            assert http.get("/v1/webhooks").json() == []
    finally:
        pair.loop.run(receiver.stop())


SIDECAR = f"""
[[modules]]
name = "raw"
command = {json.dumps([sys.executable, str(ROOT / "examples" / "sidecar" / "raw_sidecar.py")])}
env = {{ PYTHONPATH = "{ROOT}", EDGE_LOG_LEVEL = "WARNING" }}
"""


def test_an_isolated_module_receives_a_tenants_events_on_its_leader_only(
    tmp_path: Path, postgres: PostgresServer, mosquitto: MosquittoProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_CLUSTER_PASSWORD", postgres.password)
    with running_pair(tmp_path, postgres, mosquitto, SIDECAR) as pair:
        leader = wait_until(
            lambda: next((n for n, gw in pair.gateways.items() if "acme" in gw.leading), None),
            within=30,
            what="a leader for acme",
        )
        other = "a" if leader == "b" else "b"

        def handled(name: str) -> int:
            return pair.gateways[name].modules.modules["raw"].handled

        wait_until(
            lambda: handled(leader) >= 20, within=30, what=f"the sidecar on {leader} handling acme's events"
        )
        assert handled(other) == 0  # its sidecar runs, registered, and gets none of acme's events
        seen = pair.seen()
        assert seen and len(seen) == len(set(seen)), "each event handled once: one consumer per tenant"

        pair.loop.run(pair.gateways.pop(leader).stop(), timeout=60)  # the leader leaves: b... takes acme
        wait_until(lambda: "acme" in pair.gateways[other].leading, within=20, what=f"{other} leading acme")
        before = handled(other)
        wait_until(
            lambda: handled(other) >= before + 20, within=30, what=f"the sidecar on {other} taking over"
        )
