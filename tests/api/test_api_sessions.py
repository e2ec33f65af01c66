"""Local accounts and console sessions, on a gateway whose API has no token issuer.

Accounts are made with `edge user` (typer's runner calls the real command in this process); the API is
reached over real HTTP with httpx and a real WebSocket client. acme owns inv-01 and inv-03, globex inv-02 and
inv-04 (tests.e2e.write_config).
"""

from __future__ import annotations

import stat
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher
from typer.testing import CliRunner
from websockets.sync.client import connect

from edge.api.accounts import AccountStore, accounts_path
from edge.cli import app
from tests.api_harness import LocalGateway, local_gateway
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port

PASSWORD = "correct horse battery"
ACCOUNTS = (
    ("alice", PASSWORD, "operator", "acme"),
    ("bob", PASSWORD, "viewer", "acme"),
    ("gina", PASSWORD, "viewer", "globex"),
    ("root", PASSWORD, "admin", None),
)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess) -> Iterator[LocalGateway]:
    with SimulatorProcess(free_port(), 4, ["--sim-time", "12:00"]) as sim:
        yield from local_gateway(
            tmp_path_factory.mktemp("sessions"),
            mosquitto.port,
            sim.port,
            ACCOUNTS,
            api_settings="sign_in_failures = 3\nsign_in_lockout = 30",
        )


def test_edge_user_keeps_argon2id_hashes_in_a_private_file(local: LocalGateway) -> None:
    runner = CliRunner()
    config = str(local.config)
    added = runner.invoke(
        app, ["user", "add", "carol", "--role", "viewer", "--tenant", "acme", "--password-stdin", "-c", config],
        input="a long enough secret\n",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    path = accounts_path(local.gateway.loaded.data_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = AccountStore(path).get("carol")
    assert (
        stored is not None
        and stored.hash.startswith("$argon2id$")
        and "a long enough" not in path.read_text()
    )
    assert PasswordHasher().verify(stored.hash, "a long enough secret")  # the library's own verifier
    listed = runner.invoke(app, ["user", "list", "--json", "-c", config])
    assert '"carol"' in listed.output and "argon2" not in listed.output
    short = runner.invoke(app, ["user", "passwd", "carol", "--password-stdin", "-c", config], input="short\n")
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    nobody = runner.invoke(
        app,
        ["user", "add", "dave", "--role", "operator", "--password-stdin", "-c", config],
        input=f"{PASSWORD}\n",
    )
    assert nobody.exit_code == 1 and "needs a tenant" in nobody.output
    changed = runner.invoke(
        app, ["user", "passwd", "carol", "--password-stdin", "-c", config], input="another long secret\n"
    )
    assert changed.exit_code == 0
    with local.client() as http:  # the running gateway reads the changed file
        ok = http.post("/v1/session", json={"username": "carol", "password": "another long secret"})
        assert ok.status_code == 200
    assert runner.invoke(app, ["user", "remove", "carol", "-c", config]).exit_code == 0
    assert AccountStore(path).get("carol") is None


def test_a_session_cookie_is_httponly_strict_and_scoped_like_a_token(local: LocalGateway) -> None:
    with local.client() as http:
        answer = http.post("/v1/session", json={"username": "bob", "password": PASSWORD})
        assert answer.status_code == 200
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert "secure" not in cookie  # plain HTTP on loopback; Secure with TLS (test_api_tls)
        body = answer.json()
        assert (body["user"], body["role"], body["tenant"]) == ("bob", "viewer", "acme")
        devices = http.get("/v1/devices")
        assert devices.status_code == 200 and {d["name"] for d in devices.json()} == {"inv-01", "inv-03"}
        assert http.get("/v1/devices/inv-02").status_code == 404  # another tenant's device is not found
        assert http.get("/v1/devices", params={"tenant": "globex"}).status_code == 403
        assert http.get("/v1/session").json()["csrf_token"] == body["csrf_token"]
    with local.client() as stranger:
        assert stranger.get("/v1/devices").status_code == 401
        stranger.cookies.set("edge_session", "made-up")
        assert stranger.get("/v1/devices").status_code == 401


def test_changes_need_the_sessions_csrf_token_and_the_role(local: LocalGateway) -> None:
    with local.sign_in("bob", PASSWORD) as (viewer, csrf):
        refused = viewer.put("/v1/devices/inv-01/points/ac_power/value", json={"value": 1})
        assert refused.status_code == 403 and "x-csrf-token" in refused.json()["detail"]
        wrong = viewer.put(
            "/v1/devices/inv-01/points/ac_power/value",
            json={"value": 1},
            headers={"X-CSRF-Token": "x" + csrf},
        )
        assert wrong.status_code == 403
        role = viewer.put(
            "/v1/devices/inv-01/points/ac_power/value", json={"value": 1}, headers={"X-CSRF-Token": csrf}
        )
        assert role.status_code == 403 and "operator role" in role.json()["detail"]
        assert viewer.delete("/v1/session").status_code == 403
        assert viewer.delete("/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert viewer.get("/v1/devices").status_code == 401
    with local.sign_in("alice", PASSWORD) as (
        operator,
        csrf,
    ):  # the operator's write reaches the command path (ac_power is read-only there)
        write = operator.put(
            "/v1/devices/inv-01/points/ac_power/value", json={"value": 1}, headers={"X-CSRF-Token": csrf}
        )
        assert write.status_code == 422 and "not writable" in write.json()["detail"]


def test_an_admin_session_acts_for_the_tenant_it_names(local: LocalGateway) -> None:
    with local.sign_in("root", PASSWORD) as (admin, _):
        assert admin.get("/v1/devices").status_code == 400  # names no tenant
        globex = admin.get("/v1/devices", params={"tenant": "globex"}).json()
        assert {d["name"] for d in globex} == {"inv-02", "inv-04"}
        assert {t["id"] for t in admin.get("/v1/tenants").json()} == {"acme", "globex"}


def test_failed_sign_ins_lock_that_account_from_that_address_only(local: LocalGateway) -> None:
    with local.client() as http:
        assert (
            http.post("/v1/session", json={"username": "gina", "password": "wrong one!"}).status_code == 401
        )
        assert http.post("/v1/session", json={"username": "nobody", "password": "wrong"}).status_code == 401
        for _ in range(2):
            http.post("/v1/session", json={"username": "gina", "password": "wrong one!"})
        locked = http.post("/v1/session", json={"username": "gina", "password": PASSWORD})
        assert locked.status_code == 429 and "retry-after" in locked.headers
        # another user behind the same address (a proxy) still signs in
        assert http.post("/v1/session", json={"username": "bob", "password": PASSWORD}).status_code == 200
        # a form post from another site cannot sign in (no JSON content type)
        form = http.post(
            "/v1/session",
            content=b'{"username":"bob","password":"x"}',
            headers={"content-type": "text/plain"},
        )
        assert form.status_code in (415, 422)
    # the same account from another client address is not locked
    import httpx

    other = httpx.HTTPTransport(local_address="127.0.0.2")
    with local.client(transport=other) as elsewhere:
        assert (
            elsewhere.post("/v1/session", json={"username": "gina", "password": PASSWORD}).status_code == 200
        )


def test_removing_an_account_ends_its_sessions(local: LocalGateway) -> None:
    store = AccountStore(accounts_path(local.gateway.loaded.data_dir))
    store.add("temp", PASSWORD, "viewer", "acme")
    with local.sign_in("temp", PASSWORD) as (http, _):
        assert http.get("/v1/devices").status_code == 200
        store.remove("temp")
        assert http.get("/v1/devices").status_code == 401


def test_the_live_stream_takes_the_session_from_the_gateways_own_pages_only(local: LocalGateway) -> None:
    with local.sign_in("bob", PASSWORD) as (http, _):
        cookie = f"edge_session={http.cookies['edge_session']}"
    url = local.base_url.replace("http://", "ws://") + "/v1/events/stream?device=inv-01"
    host = local.base_url.removeprefix("http://")
    with connect(url, additional_headers={"Cookie": cookie}, origin=f"http://{host}", open_timeout=10) as ws:  # type: ignore[arg-type]
        message = ws.recv(timeout=10)
        assert '"inv-01"' in str(message)
    with connect(
        url, additional_headers={"Cookie": cookie}, origin="http://evil.example", open_timeout=10
    ) as ws:  # type: ignore[arg-type]
        with pytest.raises(Exception) as closed:
            ws.recv(timeout=10)
        assert "4403" in str(closed.value) or "own pages" in str(closed.value)
