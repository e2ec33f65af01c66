"""Per-tenant limits (edge.ops.quotas) and the fair outbox writer queue (edge.outbox.fair_queue).

A real gateway with its API, a real Modbus simulator and Mosquitto: one tenant (acme) over its ingest, API and
stream limits, another (globex) at its defaults. Each limit acts by its policy on acme only, is counted and
reported (status snapshot, /v1/status, `edge status`), and globex never notices. The writer's queue is checked
against a real SQLite outbox: a flood of one tenant does not delay another's commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from edge.cli import app
from edge.cli.run_cmd import write_status
from edge.config.models import TenantLimits
from edge.ops.quotas import Quotas
from edge.ops.stats import GatewayStats
from edge.ops.status import status_file
from edge.outbox.sqlite import SqliteOutbox
from edge.sdk.events import MODULE_COMMAND, MODULE_COMMAND_RESULT, Event, make_event
from edge.sdk.ratelimit import TokenBucket
from edge.sdk.tenancy import TenantContext, tenant_scope
from tests.api_harness import ApiGateway, api_with_simulator
from tests.helpers import MosquittoProcess, MqttRecorder, until

ACME_LIMITS = (
    "{ ingest_rate = 5, ingest_burst = 1, api_rate = 1, api_burst = 2, ws_clients = 1, command_rate = 0.2 }"
)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess) -> Iterator[ApiGateway]:
    yield from api_with_simulator(
        tmp_path_factory.mktemp("quotas"),
        mosquitto.port,
        devices=2,  # inv-01 of acme, inv-02 of globex
        poll_interval=0.1,
        tenant_limits={"acme": ACME_LIMITS},
        # the default every tenant without its own has; a module to send commands to
        more_config='\n[limits]\napi_rate = 200\n[[modules]]\nname = "solar"\n',
    )


def test_a_tenant_over_its_ingest_rate_has_its_polls_slowed_and_counted_and_no_other(
    api: ApiGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = api.gateway
    acme, globex = gateway.stats.device("inv-01"), gateway.stats.device("inv-02")
    api.wait_for(lambda: acme.polls >= 3 and globex.polls >= 3, what="both devices polled")
    started, acme_before = time.monotonic(), acme.polls
    api.wait_for(lambda: time.monotonic() - started >= 2.0 and acme.polls > acme_before)
    elapsed = time.monotonic() - started
    # offered 10 polls/s, allowed 5 events/s with a burst of 1: never more than the bucket lets through
    assert acme.polls - acme_before <= 5 * elapsed + 2
    counters = gateway.stats.quotas
    assert counters["acme"]["ingest"].acted > 0 and counters["acme"]["ingest"].waited_s > 0
    assert counters["globex"]["ingest"].acted == 0
    snapshot = api.loop.run(gateway.status())
    assert snapshot.limits["acme"]["ingest"]["policy"] == "slow"
    assert snapshot.limits["acme"]["storage"]["limit"] == 1 << 30
    assert snapshot.limits["globex"]["ingest"]["acted"] == 0
    with api.client(api.token("acme")) as client:
        mine = client.get("/v1/status").json()
    assert mine["limits"]["ingest"]["acted"] > 0 and "globex" not in str(mine)
    # Prometheus, read by its own parser: the counters with tenant, limit and policy
    with api.client() as scraper:  # loopback may scrape
        text = scraper.get("/metrics").text
    acted = {
        (sample.labels["tenant"], sample.labels["limit"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "edge_tenant_limit_acted"
        for sample in family.samples
    }
    assert acted[("acme", "ingest")] > 0 and acted[("globex", "ingest")] == 0
    # reported by `edge status` from the status file, as an operator sees it
    write_status(status_file(gateway.loaded.data_dir), snapshot, api.loop.run(gateway.health.check()))
    shown = CliRunner().invoke(app, ["status", "-c", str(gateway.loaded.path)]).output
    line = next(row for row in shown.splitlines() if row.startswith("acme") and " ingest " in row)
    assert "slow" in line and "5" in line
    assert not [row for row in shown.splitlines() if row.startswith("globex") and " ingest " in row]


def test_a_tenant_over_its_request_rate_gets_429_with_retry_after_and_others_do_not(api: ApiGateway) -> None:
    with api.client(api.token("acme")) as acme, api.client(api.token("globex")) as globex:
        answers = [acme.get("/v1/devices") for _ in range(6)]
        others = [globex.get("/v1/devices").status_code for _ in range(6)]
    refused = [a for a in answers if a.status_code == 429]
    assert refused and answers[0].status_code == 200
    assert int(refused[0].headers["retry-after"]) >= 1
    assert refused[0].headers["content-type"].startswith("application/problem+json")
    assert "over its API request limit" in refused[0].json()["detail"]
    assert others == [200] * 6
    counter = api.gateway.stats.quotas["acme"]["api"]
    assert counter.policy == "refuse" and counter.acted >= len(refused)
    assert api.gateway.stats.quotas["globex"]["api"].acted == 0


def test_a_tenant_at_its_stream_limit_has_the_next_stream_closed_with_the_reason(api: ApiGateway) -> None:
    feed = api.gateway.api.feed if api.gateway.api else None
    assert feed is not None
    with connect(f"{api.ws_url}?access_token={api.token('acme')}"):
        api.wait_for(lambda: feed.clients(["acme"]) == 1, what="acme's first stream subscribed")
        with (
            connect(f"{api.ws_url}?access_token={api.token('acme')}") as second,
            pytest.raises(ConnectionClosed) as closed,
        ):
            second.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert "live streams, its limit" in closed.value.rcvd.reason
        with connect(f"{api.ws_url}?access_token={api.token('globex')}"):  # another tenant: not refused
            api.wait_for(lambda: feed.clients(["globex"]) == 1, what="globex's stream subscribed")
    assert api.gateway.stats.quotas["acme"]["ws_clients"].acted == 1


def test_module_commands_over_the_rate_are_answered_with_the_reason_but_not_stored(api: ApiGateway) -> None:
    topic = "edge/acme/cmd/module/solar/status"
    recorder = MqttRecorder(api.gateway.config.bus.port, f"{topic}/result")
    try:
        for n in range(3):  # a burst of one command, then one every 5 s: the 2nd and 3rd are over the rate
            recorder.publish(topic, orjson.dumps({"args": {}, "id": f"q{n}"}))
        answers = recorder.wait_for(lambda got: len(got) >= 2)
    finally:
        recorder.close()
    refused = [orjson.loads(payload) for _, payload, _ in answers]
    assert {a["request_id"] for a in refused} == {"q1", "q2"}
    assert all("over its module command limit (0.2/s" in a["reason"] for a in refused)
    assert api.gateway.stats.quotas["acme"]["commands"].acted == 2

    async def stored() -> list[str]:
        with tenant_scope(api.gateway.tenants["acme"]):
            rows = await api.gateway.outbox.read_after(0, 100_000, [MODULE_COMMAND, MODULE_COMMAND_RESULT])
        return [orjson.loads(r.body)["data"]["request_id"] for r in rows]

    api.wait_for(lambda: "q0" in api.loop.run(stored()), what="the accepted command stored")
    assert not {"q1", "q2"} & set(api.loop.run(stored()))  # a flood of refusals is not a flood of events


# ---- the limits themselves, without a gateway --------------------------------------------------------------


async def test_commands_are_refused_with_the_reason_and_handler_time_is_waited_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stats = GatewayStats()
    quotas = Quotas({"acme": TenantLimits(command_rate=2, module_time=0.5), "globex": TenantLimits()}, stats)
    with caplog.at_level(logging.WARNING, logger="edge.ops.quotas"):
        answers = [quotas.module_command("acme", "alarms") for _ in range(5)]
    assert answers[:2] == [None, None]
    assert all(a is not None and "module command limit (2/s" in a for a in answers[2:])
    assert stats.quotas["acme"]["commands"].acted == 3
    assert (
        len([r for r in caplog.records if "commands limit" in r.getMessage()]) == 1
    )  # once, not per refusal
    # 1.1 s of handler time against a budget of 1 s at once, 0.5 s/s: the next batch waits ~0.2 s
    quotas.module_spent("acme", 1.1)
    started = time.monotonic()
    await quotas.module_turn("acme")
    assert time.monotonic() - started >= 0.1
    assert stats.quotas["acme"]["module_time"].waited_s > 0
    await asyncio.wait_for(quotas.module_turn("globex"), 0.05)  # globex owes nothing
    assert stats.quotas["globex"]["module_time"].acted == 0
    samples = {(name, labels["tenant"], labels["limit"]): v for name, labels, v in stats.quota_samples()}
    assert samples[("edge_tenant_limit_acted", "acme", "commands")] == 3.0
    assert samples[("edge_tenant_limit", "acme", "commands")] == 2.0


async def test_retained_point_updates_count_against_the_mqtt_rate_and_hold_back_when_over_it() -> None:
    stats = GatewayStats()
    quotas = Quotas({"acme": TenantLimits(mqtt_rate=100), "globex": TenantLimits()}, stats)
    assert quotas.point_updates_due("acme")
    quotas.point_updates_sent("acme", 250)  # a burst of updates: 150 over the bucket of 100
    assert not quotas.point_updates_due("acme") and quotas.point_updates_due("globex")
    assert stats.quotas["acme"]["mqtt"].acted == 1
    started = time.monotonic()
    await quotas.publish("acme", 10)  # its events wait for the debt too: one MQTT rate for both
    assert time.monotonic() - started > 1.0
    assert quotas.point_updates_due("acme")


async def test_a_token_bucket_refuses_or_charges_without_waiting() -> None:
    bucket = TokenBucket(rate=10, burst=2)
    assert bucket.try_take() == 0.0 and bucket.try_take() == 0.0
    assert 0.0 < bucket.try_take() <= 0.1  # empty: about one token's time
    bucket.charge(5)
    assert bucket.in_debt
    assert await bucket.take(0) > 0.3  # waits the debt off (~0.5 s)


def _event(tenant: str, n: int) -> Event:
    return make_event(
        type="org.example.t", source="/t", subject=f"s{n}", tenant=tenant, time=time.time(), data={}
    )


async def test_a_tenant_flooding_the_outbox_writer_does_not_delay_another_tenants_commit(
    tmp_path: Path,
) -> None:
    outbox = SqliteOutbox(tmp_path / "o.db", commit_max_events=200, queue_size=1000)
    await outbox.open()
    try:
        flood = [_event("acme", n) for n in range(3000)]

        async def attacker() -> None:
            with tenant_scope(TenantContext("acme")):
                for event in flood:  # waits on its own bound (1000) once its queue is full
                    await outbox.append(event)

        task = asyncio.create_task(attacker())
        await until(lambda: outbox.queued >= 900, 10, "acme's share of the queue filled", step=0.001)
        with tenant_scope(TenantContext("globex")):
            position = await asyncio.wait_for(outbox.append_durable(_event("globex", 0)), 10)
        committed_before = outbox.committed_events
        await asyncio.wait_for(task, 30)
        await until(lambda: outbox.committed_events == 3001, 30, "the whole flood committed")
        # taken in turns: globex's event went into the next commit, not behind acme's 1000 queued events
        assert committed_before <= 2 * 200 + 1 and position <= 2 * 200 + 1
        with tenant_scope(TenantContext("acme")):
            rows = await outbox.read_after(0, 5000, None)
        assert [r.id for r in rows] == [e.id for e in flood]  # the flood itself kept its order, complete
    finally:
        await outbox.close()
