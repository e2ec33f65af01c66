"""The REST API over real HTTP: a gateway polling the Modbus simulator, tokens from the test OIDC issuer.

Tenants: inv-01 and inv-03 belong to acme, inv-02 and inv-04 to globex (tests.e2e.write_config).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.api import openapi_document
from tests.api_harness import ApiGateway, api_with_simulator
from tests.helpers import MosquittoProcess

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess) -> Iterator[ApiGateway]:
    yield from api_with_simulator(tmp_path_factory.mktemp("api"), mosquitto.port)


def _values(api: ApiGateway, token: str) -> list[dict]:
    def ready() -> list[dict] | None:
        got = api.client(token).get("/v1/points").json()
        return got if got and all(p["quality"] is not None for p in got) else None

    return api.wait_for(ready, what="every point has a value")


def test_without_a_token_only_health_answers_and_errors_are_problem_json(api: ApiGateway) -> None:
    with api.client() as http:
        assert http.get("/health").json()["status"] == "ok"
        refused = http.get("/v1/devices")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == PROBLEM
        assert refused.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        body = refused.json()
        assert (
            body["status"] == 401 and "bearer token" in body["detail"] and body["instance"] == "/v1/devices"
        )
        assert http.get("/v1/devices", headers={"Authorization": "Basic eDp5"}).status_code == 401


def test_a_tenant_sees_its_own_devices_and_latest_values_only(api: ApiGateway) -> None:
    acme = api.token("acme")
    values = _values(api, acme)
    assert {v["device"] for v in values} == {"inv-01", "inv-03"}
    power = next(v for v in values if v["device"] == "inv-01" and v["point"] == "ac_power")
    assert power["quality"] == "good" and power["unit"] == "W" and power["time"].endswith("Z")
    assert isinstance(power["value"], int | float) and power["sequence"] >= 1
    with api.client(acme) as http:
        devices = http.get("/v1/devices").json()
        assert [d["name"] for d in devices] == ["inv-01", "inv-03"]
        assert all(d["tenant"] == "acme" and d["enabled"] and d["up"] for d in devices)
        detail = http.get("/v1/devices/inv-01").json()
        assert {p["point"] for p in detail["point_values"]} >= {"ac_power", "power_limit"}
        one = http.get("/v1/devices/inv-01/points/ac_power").json()
        assert one["quality"] == "good" and one["device"] == "inv-01"
        assert http.get("/v1/points", params={"device": "inv-03"}).json()[0]["device"] == "inv-03"
        # another tenant's device is not found, on every route that names one
        for path in (
            "/v1/devices/inv-02",
            "/v1/devices/inv-02/points/ac_power",
            "/v1/devices/inv-02/points/ac_power/history",
        ):
            missing = http.get(path)
            assert missing.status_code == 404, path
            assert (
                missing.headers["content-type"] == PROBLEM
                and "no device 'inv-02'" in missing.json()["detail"]
            )
        assert http.get("/v1/devices/inv-01/points/nope").status_code == 404
        assert http.get("/v1/devices", params={"tenant": "globex"}).status_code == 403
    with api.client(api.token("globex")) as http:
        assert {v["device"] for v in http.get("/v1/points").json()} == {"inv-02", "inv-04"}


def test_history_is_paginated_by_position_within_a_time_range(api: ApiGateway) -> None:
    token = api.token("acme")
    _values(api, token)
    with api.client(token) as http:
        url = "/v1/devices/inv-01/points/ac_power/history"
        api.wait_for(
            lambda: len(http.get(url, params={"limit": 10}).json()["samples"]) >= 6, what="6 samples"
        )
        whole = http.get(url, params={"limit": 6}).json()["samples"]
        first = http.get(url, params={"limit": 3}).json()
        assert first["next_cursor"] is not None and len(first["samples"]) == 3
        second = http.get(url, params={"limit": 3, "cursor": first["next_cursor"]}).json()
        assert [s["position"] for s in first["samples"] + second["samples"]] == [s["position"] for s in whole]
        assert all(s["quality"] == "good" and s["unit"] == "W" for s in whole)
        since, until = whole[1]["time"], whole[4]["time"]
        ranged = http.get(url, params={"since": since, "until": until, "limit": 100}).json()
        assert [s["time"] for s in ranged["samples"]] == [s["time"] for s in whole[1:4]]
        assert ranged["next_cursor"] is None
        bad = http.get(url, params={"since": until, "until": since})
        assert bad.status_code == 422 and "later than" in bad.json()["detail"]
        assert http.get(url, params={"limit": 5000}).status_code == 422


def test_writes_need_the_operator_role_and_take_the_command_path(api: ApiGateway) -> None:
    url = "/v1/devices/inv-01/points/power_limit/value"
    with api.client(api.token("acme", "viewer")) as http:
        refused = http.put(url, json={"value": 40})
        assert refused.status_code == 403 and "operator role" in refused.json()["detail"]
    with api.client(api.token("acme", "operator")) as http:
        done = http.put(url, json={"value": 40, "id": "rest-1"})
        assert done.status_code == 200, done.text
        assert done.json() == {
            "device": "inv-01",
            "point": "power_limit",
            "value": 40,
            "ok": True,
            "request_id": "rest-1",
            "reason": None,  # the device's remark, when it took the write with one
        }
        api.wait_for(
            lambda: http.get("/v1/devices/inv-01/points/power_limit").json()["value"] == 40,
            what="limit read back",
        )
        read_only = http.put("/v1/devices/inv-01/points/ac_power/value", json=5)
        assert read_only.status_code == 422 and "not writable" in read_only.json()["detail"]
        garbage = http.put(url, content=b"{not json")
        assert garbage.status_code == 422 and "not JSON" in garbage.json()["detail"]
        assert http.put(url, json={"value": [1, 2]}).status_code == 422
        assert http.put("/v1/devices/inv-02/points/power_limit/value", json=10).status_code == 404
    assert api.gateway.stats.commands_accepted >= 1


def test_admin_reads_tenants_and_spans_tenants_explicitly(api: ApiGateway) -> None:
    with api.client(api.token("acme", "operator")) as http:
        assert http.get("/v1/tenants").status_code == 403
    with api.client(api.token(None, "admin")) as http:
        tenants = http.get("/v1/tenants").json()
        assert [(t["id"], t["entitlements"], t["devices"]) for t in tenants] == [
            ("acme", ["solar"], 2),
            ("globex", ["solar"], 2),
        ]
        assert http.get("/v1/tenants/globex").json()["id"] == "globex"
        assert http.get("/v1/tenants/initech").status_code == 404
        needs = http.get("/v1/devices")
        assert needs.status_code == 400 and "?tenant=" in needs.json()["detail"]
        assert [d["name"] for d in http.get("/v1/devices", params={"tenant": "globex"}).json()] == [
            "inv-02",
            "inv-04",
        ]
        status = http.get("/v1/status").json()
        assert status["devices"] == 4 and "backlog" in status
        assert http.get("/v1/status", params={"tenant": "globex"}).json()["devices"] == 2
    with api.client(api.token("acme")) as http:
        mine = http.get("/v1/status").json()
        assert mine["tenant"] == "acme" and mine["devices"] == 2 and "backlog" not in mine


def test_sync_status_and_modules_are_the_callers_tenants(api: ApiGateway) -> None:
    with api.client(api.token("globex")) as http:
        rows = http.get("/v1/sync").json()
        assert rows and {r["tenant"] for r in rows} == {"globex"}
        assert http.get("/v1/modules").json() == []  # no module serves globex in this configuration


def test_the_served_openapi_document_is_the_committed_one(api: ApiGateway) -> None:
    committed = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
    assert committed == openapi_document(), "regenerate: python -m edge.api.openapi > docs/openapi.json"
    with api.client() as http:
        assert http.get("/openapi.json").json() == committed


def test_no_documented_route_shows_acme_anything_of_globex(api: ApiGateway) -> None:
    """Every GET of the OpenAPI document, with path parameters naming globex's things, for each acme role."""
    # /v1/session... is a browser's sign-in (a cookie); a bearer token has none (test_api_sessions.py)
    paths = [
        p
        for p, ops in openapi_document()["paths"].items()
        if "get" in ops and not p.startswith("/v1/session")
    ]
    assert len(paths) >= 10
    _values(api, api.token("globex"))  # globex has data to leak
    with api.client(api.token("globex", "operator")) as http:
        hook = http.post("/v1/webhooks", json={"url": "https://globex.example.com/hook", "paused": True})
        assert hook.status_code == 201, hook.text
        search = http.post(
            "/v1/discoveries", json={"driver": "modbus", "targets": {"host": "127.0.0.1", "port": 1}}
        )
        assert search.status_code == 202, search.text
    foreign = {
        "device": "inv-02", "point": "ac_power", "tenant": "globex", "subscription": hook.json()["id"],
        "discovery": search.json()["id"],
    }  # fmt: skip
    for role in ("operator",):  # the highest tenant role; a viewer reads no more
        with api.client(api.token("acme", role)) as http:
            for path in paths:
                for query in ({}, {"tenant": "globex"}):
                    answer = http.get(path.format(**foreign), params=query)
                    assert answer.status_code < 500, (path, answer.text)
                    if answer.status_code == 200:
                        text = answer.text
                        assert "globex" not in text and "inv-02" not in text and "inv-04" not in text, (
                            path,
                            text,
                        )
                    else:
                        assert answer.status_code in (403, 404), (path, query, answer.status_code)
    with api.client(api.token("globex", "operator")) as http:
        refused = http.put("/v1/devices/inv-01/points/power_limit/value", json=10)
        assert refused.status_code == 404


def test_webhook_subscriptions_are_managed_per_tenant(api: ApiGateway) -> None:
    with api.client(api.token("acme", "viewer")) as http:
        assert http.get("/v1/webhooks").json() == []
        refused = http.post("/v1/webhooks", json={"url": "https://hooks.example.com/a"})
        assert refused.status_code == 403 and "operator role" in refused.json()["detail"]
    with api.client(api.token("acme", "operator")) as http:
        private = http.post("/v1/webhooks", json={"url": "http://10.1.2.3/hook"})
        assert private.status_code == 422 and private.headers["content-type"] == PROBLEM
        assert "refused" in private.json()["detail"]
        made = http.post(
            "/v1/webhooks",
            json={"url": "https://hooks.example.com/a", "types": ["org.edgegw.telemetry"], "paused": True},
        )
        assert made.status_code == 201, made.text
        sub = made.json()
        assert sub["secret"].startswith("whsec_") and sub["state"] == "paused"
        listed = http.get("/v1/webhooks").json()
        assert [s["id"] for s in listed] == [sub["id"]] and "secret" not in listed[0]
        resumed = http.patch(f"/v1/webhooks/{sub['id']}", json={"state": "paused", "reason": "maintenance"})
        assert resumed.json()["state_reason"] == "maintenance"
        assert http.get(f"/v1/webhooks/{sub['id']}/dead-letters").json() == []
        assert http.post(f"/v1/webhooks/{sub['id']}/replay").json() == {"replayed": 0}
        rotated = http.post(f"/v1/webhooks/{sub['id']}/rotate-secret", params={"grace": 60}).json()
        assert rotated["secret"] != sub["secret"]
    with api.client(api.token("globex", "operator")) as http:
        assert sub["id"] not in [s["id"] for s in http.get("/v1/webhooks").json()]
        assert http.get(f"/v1/webhooks/{sub['id']}").status_code == 404
        assert http.delete(f"/v1/webhooks/{sub['id']}").status_code == 404
    with api.client(api.token("acme", "operator")) as http:
        assert http.delete(f"/v1/webhooks/{sub['id']}").status_code == 204
        assert http.get(f"/v1/webhooks/{sub['id']}").status_code == 404


def test_an_admin_changes_entitlements_live_and_in_the_configuration(api: ApiGateway) -> None:
    path = api.gateway.loaded.path
    before = path.read_text()
    with api.client(api.token("acme", "operator")) as http:
        assert http.put("/v1/tenants/globex/entitlements", json={"entitlements": []}).status_code == 403
    with api.client(api.token(None, "admin")) as http:
        try:
            changed = http.put("/v1/tenants/globex/entitlements", json={"entitlements": ["solar", "billing"]})
            assert changed.status_code == 200, changed.text
            assert changed.json()["entitlements"] == ["billing", "solar"]
            assert api.gateway.tenants["globex"].entitlements == {"solar", "billing"}
            assert 'entitlements = ["solar", "billing"]' in path.read_text()
            bad = http.put("/v1/tenants/globex/entitlements", json={"entitlements": ["no spaces allowed"]})
            assert bad.status_code == 422 and "invalid" in bad.json()["detail"]
            assert http.put("/v1/tenants/initech/entitlements", json={"entitlements": []}).status_code == 404
        finally:
            http.put("/v1/tenants/globex/entitlements", json={"entitlements": ["solar"]})
    assert api.gateway.tenants["globex"].entitlements == {"solar"}
    assert "billing" not in path.read_text() or "billing" in before


def test_writes_get_the_command_paths_value_check_with_the_points_range(api: ApiGateway) -> None:
    url = "/v1/devices/inv-01/points/power_limit/value"  # a uint16 register, %
    with api.client(api.token("acme", "operator")) as http:
        for value in (70000, -1, 1e40):
            refused = http.put(url, json={"value": value})
            assert refused.status_code == 422, refused.text
            detail = refused.json()["detail"]
            assert "is out of range: power_limit accepts 0..65535 %" in detail, detail
        for body in (b'{"value": NaN}', b"Infinity", b'{"value": 1e400}'):
            refused = http.put(url, content=body)
            assert refused.status_code == 422, refused.text
            detail = refused.json()["detail"]  # the range too, as over MQTT and the CLI (trial of 2026-12-07)
            assert "is not a finite number: power_limit accepts 0..65535 %" in detail, detail
        for body, why in (  # a priority reaches the command path as over MQTT (it was dropped silently)
            ({"value": 40, "priority": 10}, "a modbus point has no write priority"),
            ({"value": 40, "priority": 17}, "'priority' must be an integer 1..16, not 17"),
        ):
            refused = http.put(url, json=body)
            assert refused.status_code == 422 and why in refused.json()["detail"], refused.text
        unknown = http.put("/v1/devices/inv-01/points/power_limt/value", json={"value": 1})
        assert unknown.status_code == 404, unknown.text
        assert "(points of inv-01: power_limit, " in unknown.json()["detail"], unknown.text  # closest first


def test_a_module_command_whose_args_json_cannot_carry_is_refused_not_a_500(api: ApiGateway) -> None:
    with api.client(api.token("acme", "operator")) as http:  # found by the API fuzz test: 2**64 in the args
        refused = http.post("/v1/modules/solar/commands/report", json={"args": {"limit": 2**64}})
        assert refused.status_code == 422, refused.text
        assert "'args' cannot be sent: Integer exceeds 64-bit range" in refused.json()["detail"], refused.text
