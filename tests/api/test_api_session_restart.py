"""Console sessions outlive the gateway's process: `edge run` is stopped and started again, and the browser's
cookie (kept by an httpx client) still signs in, with the same CSRF token. The file they are kept in is the
gateway's own (0600) and names no cookie; sessions past their idle time are gone when the store opens."""

from __future__ import annotations

import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from edge.api.accounts import AccountStore, accounts_path
from edge.api.auth import Principal
from edge.api.sessions import SESSION_COOKIE, SessionStore, sessions_path
from tests.e2e import load, write_config
from tests.helpers import MosquittoProcess, free_port, wait_port

PASSWORD = "correct horse battery"


@contextmanager
def _edge_run(path: Path, port: int) -> Iterator[None]:
    process = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "-c", str(path)], stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port, 30)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


def test_a_console_session_survives_a_restart_of_the_gateway(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    path = write_config(
        tmp_path / "edge.toml",
        mqtt_port=mosquitto.port,
        modbus_port=free_port(),
        devices=0,
        tenants=("acme",),
    )
    port = free_port()
    path.write_text(path.read_text() + f'\n[api]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n')
    data_dir = load(path)[0].data_dir
    AccountStore(accounts_path(data_dir)).add("alice", PASSWORD, "operator", "acme")
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=10.0) as browser:
        with _edge_run(path, port):
            signed_in = browser.post("/v1/session", json={"username": "alice", "password": PASSWORD})
            assert signed_in.status_code == 200, signed_in.text
            csrf = signed_in.json()["csrf_token"]
            cookie = browser.cookies[SESSION_COOKIE]
        stored = sessions_path(data_dir)
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        for file in stored.parent.glob(stored.name + "*"):  # the database and its WAL
            assert cookie.encode() not in file.read_bytes() and csrf.encode() not in file.read_bytes()

        with _edge_run(path, port):  # a new process, the same cookie
            again = browser.get("/v1/session")
            assert again.status_code == 200, again.text
            assert again.json()["user"] == "alice" and again.json()["csrf_token"] == csrf
            assert browser.get("/v1/devices").status_code == 200
            assert browser.delete("/v1/session").status_code == 403  # a change still needs the CSRF token
            assert browser.delete("/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 204
            with httpx.Client(base_url=base, cookies={SESSION_COOKIE: cookie}) as replayed:
                assert replayed.get("/v1/session").status_code == 401  # signed out for good


def test_expired_sessions_are_deleted_when_the_store_opens(tmp_path: Path) -> None:
    path = sessions_path(tmp_path)
    store = SessionStore(path, None, idle=0.2, lifetime=3600)
    old = store.create(Principal("acme", "viewer", "oidc-user"))
    store.close()
    time.sleep(0.3)
    store = SessionStore(path, None, idle=0.2, lifetime=3600)
    try:
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
        fresh = store.create(Principal("acme", "viewer", "oidc-user"))
        assert store.get(fresh.id).principal.subject == "oidc-user"
        assert fresh.csrf != old.csrf
    finally:
        store.close()
