"""A real gateway with its API on a real port, a real OIDC issuer and the Modbus simulator, for API tests.

The gateway and the issuer run in their own event loop on a background thread, as they would in their own
process; tests talk to them over HTTP and WebSocket from the test thread, and reach into the loop only to
append events (`inject`) when a test needs more traffic than the devices produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from edge.gateway import Gateway
from edge.sdk.events import Event
from edge.sdk.tenancy import tenant_scope
from simulators.oidc import OidcIssuer, running
from tests.e2e import load, write_config
from tests.helpers import SimulatorProcess, free_port, wait_until

T = TypeVar("T")

API_SECTION = """
[api]
enabled = true
host = "127.0.0.1"
port = {port}
ws_queue = {ws_queue}
max_auth_failures = {max_auth_failures}
{api_settings}
[api.oidc]
issuer = "{issuer}"
audience = "edge-gateway"
allow_http = true
jwks_refresh_min = 1.0  # long enough that a loaded machine sends a few requests inside one window (test_api_auth)
jwks_cache = 300
{oidc_settings}
"""


def api_section(
    issuer: str,
    port: int,
    *,
    ws_queue: int = 1000,
    max_auth_failures: int = 20,
    api_settings: str = "",
    oidc_settings: str = "",
) -> str:
    """The [api] and [api.oidc] tables of a test gateway; `*_settings`: more TOML lines for each table."""
    return API_SECTION.format(
        issuer=issuer,
        port=port,
        ws_queue=ws_queue,
        max_auth_failures=max_auth_failures,
        api_settings=api_settings,
        oidc_settings=oidc_settings,
    )


class LoopThread:
    """An asyncio loop on its own thread: the gateway's process, seen from the tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="gateway-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def issuer_on_a_thread(tenants: tuple[str, ...] = ("acme", "globex")) -> Iterator[OidcIssuer]:
    """The test OIDC issuer on its own loop thread while the generator runs (the body of a fixture that
    serves a gateway in another process)."""
    loop = LoopThread()
    serving = running(0, tenants)
    try:
        yield loop.run(serving.__aenter__())
    finally:
        loop.run(serving.__aexit__(None, None, None))
        loop.close()


@dataclass
class ApiGateway:
    loop: LoopThread
    gateway: Gateway
    issuer: OidcIssuer
    base_url: str

    def token(self, tenant: str | None, role: str = "viewer", **claims: Any) -> str:
        return self.issuer.mint(tenant=tenant, role=role, **claims)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=15.0)

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/v1/events/stream"

    def inject(self, events: list[Event]) -> None:
        """Append events through the outbox, as a device or module would (each in its tenant's scope)."""

        async def append() -> None:
            for event in events:
                with tenant_scope(self.gateway.tenants[event.tenant]):
                    await self.gateway.outbox.append(event)

        self.loop.run(append())

    def wait_for(
        self, predicate: Callable[[], T | None], timeout: float = 15.0, what: str | None = None
    ) -> T:
        return wait_until(predicate, timeout, what)


def api_gateway(
    tmp_path: Path,
    mqtt_port: int,
    modbus_port: int,
    devices: int = 4,
    ws_queue: int = 200,
    tenants: tuple[str, ...] = ("acme", "globex"),
    poll_interval: float = 0.2,
    max_auth_failures: int = 1000,  # the token matrices fail on purpose, from one address
    api_settings: str = "",
    oidc_settings: str = "",
    more_config: str = "",
    tenant_limits: dict[str, str] | None = None,
) -> Iterator[ApiGateway]:
    """Issuer, then gateway with [api] on a free port; torn down in reverse (a generator for fixtures).

    `api_settings` / `oidc_settings`: more lines for [api] / [api.oidc]; `more_config`: tables appended last."""
    loop = LoopThread()
    issuer_cm: AbstractAsyncContextManager[OidcIssuer] = running(0, ("acme", "globex"))
    issuer = loop.run(issuer_cm.__aenter__())
    path = write_config(
        tmp_path / "edge.toml",
        mqtt_port=mqtt_port,
        modbus_port=modbus_port,
        devices=devices,
        tenants=tenants,
        poll_interval=poll_interval,
        tenant_limits=tenant_limits,
    )
    with path.open("a") as f:
        f.write(
            api_section(
                issuer.issuer,
                0,
                ws_queue=ws_queue,
                max_auth_failures=max_auth_failures,
                api_settings=api_settings,
                oidc_settings=oidc_settings,
            )
            + more_config
        )

    async def make() -> Gateway:
        return Gateway(*load(path))

    gateway = loop.run(make())
    try:
        loop.run(gateway.start())
        assert gateway.api is not None
        yield ApiGateway(loop, gateway, issuer, f"http://127.0.0.1:{gateway.api.port}")
    finally:
        loop.run(gateway.stop())
        loop.run(issuer_cm.__aexit__(None, None, None))
        loop.close()


def api_with_simulator(
    tmp_path: Path, mqtt_port: int, devices: int = 4, **options: Any
) -> Iterator[ApiGateway]:
    """`api_gateway` over a Modbus simulator serving `devices` inverters at noon (a generator for fixtures)."""
    sim = SimulatorProcess(free_port(), devices, ["--sim-time", "12:00"])
    sim.start()
    try:
        yield from api_gateway(tmp_path, mqtt_port, sim.port, devices=devices, **options)
    finally:
        sim.stop()


@dataclass
class LocalGateway:
    """A gateway whose API has no token issuer: callers sign in with local accounts."""

    loop: LoopThread
    gateway: Gateway
    base_url: str
    config: Path

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=15.0, **options)

    @contextlib.contextmanager
    def sign_in(self, name: str, password: str, **options: Any) -> Iterator[tuple[httpx.Client, str]]:
        """A client holding a session of `name`, and the session's CSRF token."""
        with self.client(**options) as http:
            answer = http.post("/v1/session", json={"username": name, "password": password})
            assert answer.status_code == 200, answer.text
            yield http, str(answer.json()["csrf_token"])


def local_gateway(
    tmp_path: Path,
    mqtt_port: int,
    modbus_port: int,
    accounts: tuple[tuple[str, str, str, str | None], ...],
    devices: int = 4,
    api_settings: str = "",
    more_config: str = "",
    entitlements: tuple[str, ...] = ("solar",),
) -> Iterator[LocalGateway]:
    """A gateway with `[api]` and no issuer, with `accounts` (name, password, role, tenant) in its data dir."""
    from edge.api.accounts import AccountStore, accounts_path

    loop = LoopThread()
    path = write_config(
        tmp_path / "edge.toml",
        mqtt_port=mqtt_port,
        modbus_port=modbus_port,
        devices=devices,
        entitlements=entitlements,
    )
    with path.open("a") as f:
        f.write(f'\n[api]\nenabled = true\nhost = "127.0.0.1"\nport = 0\n{api_settings}\n{more_config}')
    loaded, registry = load(path)
    store = AccountStore(accounts_path(loaded.data_dir))
    for name, password, role, tenant in accounts:
        store.add(name, password, role, tenant)

    async def make() -> Gateway:  # built on the gateway's loop, as in its process
        return Gateway(loaded, registry)

    gateway = loop.run(make())
    try:
        loop.run(gateway.start())
        assert gateway.api is not None
        yield LocalGateway(loop, gateway, gateway.api.url, path)
    finally:
        loop.run(gateway.stop())
        loop.close()
