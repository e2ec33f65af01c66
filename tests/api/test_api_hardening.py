"""Hardening of the served API (issue 21): the failure limiter, trusted proxies, role maps, bounded parameters,
capped request ids and what a tenant sees of the modules. httpx against the real gateway, tokens from the
test issuer; the gateway polls the Modbus simulator and hosts the solar module for both tenants.

Tenants: inv-01 belongs to acme, inv-02 to globex (tests.e2e.write_config).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from edge.ops.logs import redact
from tests.api_harness import ApiGateway, api_with_simulator
from tests.helpers import MosquittoProcess

PROBLEM = "application/problem+json"
ROLE_MAP = 'role_map = { "edge-viewer" = "viewer", "edge-operator" = "operator", "edge-admin" = "admin" }'
HISTORY = "/v1/devices/inv-01/points/ac_power/history"
LIMIT = "/v1/devices/inv-01/points/power_limit/value"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess) -> Iterator[ApiGateway]:
    yield from api_with_simulator(
        tmp_path_factory.mktemp("hardening"),
        mosquitto.port,
        devices=2,
        max_auth_failures=20,
        api_settings='trusted_proxies = ["127.0.0.1"]',
        oidc_settings=ROLE_MAP,
        more_config='\n[[modules]]\nname = "solar"\n',
    )


def _from(api: ApiGateway, address: str, token: str | None = None) -> httpx.Client:
    """A client whose connections come from `address` (any 127.0.0.0/8 address reaches the loopback API)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=api.base_url, headers=headers, transport=transport, timeout=15.0)


def _problem(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM, answer.headers
    detail: str = answer.json()["detail"]
    return detail


# ---- the failed-authentication limiter (item 3) -----------------------------------------------------------


def test_others_failures_never_refuse_a_valid_token_from_the_same_address(api: ApiGateway) -> None:
    """Behind a reverse proxy every client has one address: 25 different bad tokens (other users) and one
    bad token replayed 25 times (a stale tab) must not lock out a valid token sent right after."""
    with api.client() as http:
        others = [
            http.get("/v1/devices", headers={"Authorization": f"Bearer junk-{i}"}).status_code
            for i in range(25)
        ]
        assert others == [401] * 25
        replayed = [
            http.get("/v1/devices", headers={"Authorization": "Bearer stale-token"}).status_code
            for _ in range(25)
        ]
        assert replayed[:20] == [401] * 20 and set(replayed[20:]) == {429}, replayed
        assert (
            http.get(
                "/v1/devices", headers={"Authorization": f"Bearer {api.token('acme', 'edge-viewer')}"}
            ).status_code
            == 200
        )


def test_the_client_address_comes_from_x_forwarded_for_only_through_a_trusted_proxy(api: ApiGateway) -> None:
    bad = {"Authorization": "Bearer forged-token"}
    with _from(api, "127.0.0.1") as proxy:  # trusted: its X-Forwarded-For names the client
        answers = [
            proxy.get("/v1/devices", headers=bad | {"X-Forwarded-For": "203.0.113.7"}) for _ in range(21)
        ]
        assert "from 203.0.113.7" in _problem(answers[-1], 429)
        other_client = proxy.get("/v1/devices", headers=bad | {"X-Forwarded-For": "203.0.113.8"})
        assert other_client.status_code == 401  # another client behind the proxy is counted apart
    with _from(api, "127.0.0.2") as stranger:  # not a proxy: its X-Forwarded-For is ignored
        answers = [
            stranger.get("/v1/devices", headers=bad | {"X-Forwarded-For": f"198.51.100.{i}"})
            for i in range(21)
        ]
        assert "from 127.0.0.2" in _problem(answers[-1], 429)


# ---- role maps (item 6) -----------------------------------------------------------------------------------


def test_with_a_role_map_only_mapped_role_names_are_roles(api: ApiGateway) -> None:
    with api.client(api.token(None, "admin")) as http:  # an IdP role that happens to be called "admin"
        assert "no gateway role" in _problem(http.get("/v1/tenants"), 403)
    with api.client(api.token("acme", "operator")) as http:
        assert "no gateway role" in _problem(http.get("/v1/devices"), 403)
    with api.client(api.token(None, "edge-admin")) as http:
        assert [t["id"] for t in http.get("/v1/tenants").json()] == ["acme", "globex"]
    with api.client(api.token("acme", "edge-viewer")) as http:
        assert http.get("/v1/devices").status_code == 200
        assert "admin role" in _problem(http.get("/v1/tenants"), 403)


# ---- bounded parameters and capped ids (item 8) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"cursor": 2**63}, "query.cursor"),
        ({"cursor": -1}, "query.cursor"),
        ({"since": "0001-01-01T00:00:00"}, "query.since"),  # no offset: local time is not a time
        ({"until": "9999-12-31T23:59:59"}, "query.until"),
        ({"since": "10000-01-01T00:00:00Z"}, "query.since"),
        ({"limit": 2**64}, "query.limit"),
    ],
)
def test_history_parameters_out_of_range_are_422_problems(
    api: ApiGateway, params: dict[str, object], reason: str
) -> None:
    with api.client(api.token("acme", "edge-viewer")) as http:
        assert reason in _problem(http.get(HISTORY, params=params), 422)


def test_history_takes_the_extremes_of_its_ranges(api: ApiGateway) -> None:
    with api.client(api.token("acme", "edge-viewer")) as http:
        last = http.get(HISTORY, params={"cursor": 2**63 - 1})
        assert last.status_code == 200 and last.json()["samples"] == []
        ancient = http.get(
            HISTORY, params={"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59-14:00"}
        )
        assert ancient.status_code == 200, ancient.text


def test_webhook_numeric_parameters_are_bounded(api: ApiGateway) -> None:
    with api.client(api.token("acme", "edge-operator")) as http:
        made = http.post("/v1/webhooks", json={"url": "https://hooks.example.com/bounded", "paused": True})
        assert made.status_code == 201, made.text
        sub = made.json()["id"]
        try:
            assert "query.limit" in _problem(
                http.get(f"/v1/webhooks/{sub}/dead-letters", params={"limit": 2**63}), 422
            )
            assert http.get(f"/v1/webhooks/{sub}/dead-letters", params={"limit": 1000}).json() == []
            for grace in ("nan", "inf", "-1", "2592001"):
                rotated = http.post(f"/v1/webhooks/{sub}/rotate-secret", params={"grace": grace})
                assert "query.grace" in _problem(rotated, 422), grace
        finally:
            assert http.delete(f"/v1/webhooks/{sub}").status_code == 204


def test_a_write_with_an_oversized_request_id_is_refused_before_acting(api: ApiGateway) -> None:
    with api.client(api.token("acme", "edge-operator")) as http:
        api.wait_for(
            lambda: http.get(LIMIT.removesuffix("/value")).json()["value"] is not None, what="a value"
        )
        before = api.gateway.stats.commands_accepted
        huge = http.put(LIMIT, json={"value": 41, "id": "x" * 10_000_000})
        assert "16384 bytes" in _problem(huge, 413)
        long = http.put(LIMIT, json={"value": 42, "id": "y" * 1000})
        assert "at most 128" in _problem(long, 422)
        time.sleep(1.0)  # five polls: a write that went through would be read back by now
        assert http.get(LIMIT.removesuffix("/value")).json()["value"] not in (41, 42)
        assert api.gateway.stats.commands_accepted == before
        fine = http.put(LIMIT, json={"value": 43, "id": "z" * 128})
        assert fine.status_code == 200 and fine.json()["request_id"] == "z" * 128


# ---- what a tenant sees of the modules (item 9) -----------------------------------------------------------


def test_a_tenant_sees_a_modules_state_but_not_its_gateway_wide_counters_or_texts(api: ApiGateway) -> None:
    with api.client(api.token("acme", "edge-admin")) as http:  # admins see every module, whatever tenant
        solar = api.wait_for(
            lambda: next((m for m in http.get("/v1/modules").json() if m["handled"]), None),
            what="the solar module handled events",
        )
    assert solar["tenants"] == ["acme", "globex"] and "published" in solar["detail"]
    for tenant in ("acme", "globex"):
        with api.client(api.token(tenant, "edge-viewer")) as http:
            (mine,) = http.get("/v1/modules").json()
        assert mine["name"] == "solar" and mine["state"] == solar["state"] and mine["healthy"] is True
        assert mine["tenants"] == [tenant]
        hidden = ("detail", "error", "handled", "handler_errors", "retries", "dead_lettered")
        assert {name: mine[name] for name in hidden} == dict.fromkeys(hidden), mine


# ---- secrets in log lines (item 4; the served case is in test_api_process) --------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '127.0.0.1:5 - "WebSocket /v1/events/stream?access_token=eyJhbGciOi.eyJzdWIi.c2ln&type=x" [accepted]',
            '127.0.0.1:5 - "WebSocket /v1/events/stream?access_token=***&type=x" [accepted]',
        ),
        (
            "HTTP Request: POST https://hooks.example.com/in?a=1&TOKEN=s3cr3t;sig=abc#frag",
            "HTTP Request: POST https://hooks.example.com/in?a=1&TOKEN=***;sig=***#frag",
        ),
        (
            "header Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig",
            "header Authorization: Bearer ***",
        ),
        ('WWW-Authenticate: Bearer error="invalid_token"', 'WWW-Authenticate: Bearer error="invalid_token"'),
        ("tokens=3 secret_count=2", "tokens=3 secret_count=2"),  # words, not query parameters
    ],
)
def test_query_secrets_and_bearer_tokens_are_redacted_from_any_log_line(line: str, expected: str) -> None:
    assert redact(line) == expected
