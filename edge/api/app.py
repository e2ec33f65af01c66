"""The REST API and WebSocket as one ASGI app, and the server the gateway runs it in.

`build_app` includes one router per resource (`edge.api.routes.ROUTERS`); adding a resource is a router and
one line there. `ApiServer` is created by the gateway when `[api] enabled`, with the narrow services it uses
(`edge.api.services.ApiServices`), not the gateway: it feeds the latest-value cache and the live feed from
outbox commits, binds its socket in `start` (so a busy port fails the gateway's start with a clear error) and
serves with uvicorn as a supervised task of the gateway's loop.

Hardening (docs/api.md): request bodies are limited ahead of routing (`edge.api.limits`); X-Forwarded-For is
honoured only from `[api] trusted_proxies`, so the client address the failure limiter counts cannot be forged;
query secrets (`?access_token=`) are redacted from uvicorn's log lines; WebSocket clients, who have nothing to
say, may send only small messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from edge.api import problems
from edge.api.accounts import AccountStore, accounts_path
from edge.api.auth import FailureLimiter, OidcVerifier
from edge.api.counting import RequestCounts, RequestMetrics
from edge.api.deps import ApiState
from edge.api.limits import BodyLimit
from edge.api.live import LatestValues, LiveFeed
from edge.api.oidc_sign_in import OidcSignIn
from edge.api.routes import ROUTERS
from edge.api.services import ApiServices
from edge.api.sessions import SessionStore, sessions_path
from edge.config import LoadedConfig
from edge.config.models import ApiConfig
from edge.console import ConsoleFiles
from edge.ops.logs import redact
from edge.sdk.errors import EdgeError
from edge.sdk.events import TELEMETRY
from edge.sdk.tenancy import tenant_scope

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
_SEED_EVENTS = 20  # newest stored telemetry events per device folded into the cache at start
_WS_MAX_MESSAGE = 4096  # bytes a WebSocket client may send in one message (it only ever closes)
_SERVER_LOGGERS = ("uvicorn.error", "uvicorn.access")  # they log request paths with their query strings


class ApiError(EdgeError):
    """The API cannot serve (its address is taken or invalid)."""


def build_app(state: ApiState | None = None, config: ApiConfig | None = None) -> FastAPI:
    app = FastAPI(
        title="Edge gateway API",
        version=API_VERSION,
        description="Devices, points, history, writes, modules, tenants, sync status and live events of one "
        "gateway. Bearer tokens from the configured OpenID Connect issuer, or a console session of a local "
        "account (cookie and X-CSRF-Token); errors are RFC 9457 problem+json.",
    )
    app.state.api = state
    app.state.api_config = config or ApiConfig()
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/console", ConsoleFiles(), name="console")
    app.add_api_route("/", _to_console, include_in_schema=False)
    routes = [route for router in ROUTERS for route in router.routes]  # with their full paths
    app.add_middleware(BodyLimit, routes=routes, default=(config or ApiConfig()).max_body)
    app.add_middleware(RequestMetrics, counts=state.requests if state else RequestCounts())  # outermost
    return app


async def _to_console() -> RedirectResponse:
    return RedirectResponse("/console/")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The gateway's process owns SIGINT/SIGTERM (edge.cli.run_cmd) and stops us through `stop`.
        yield


class ApiServer:
    def __init__(self, services: ApiServices, config: ApiConfig) -> None:
        self.config = config
        self.latest = LatestValues()
        self.feed = LiveFeed(config.ws_queue)
        self.verifier = OidcVerifier(config.oidc) if config.oidc else None
        if self.verifier is not None:
            self.verifier.limiter.limit = config.max_auth_failures
        accounts = AccountStore(accounts_path(services.loaded.data_dir))
        self.tls = tls_files(services.loaded.path, config)
        self.state = ApiState(
            services,
            self.verifier,
            self.latest,
            self.feed,
            SessionStore(
                sessions_path(services.loaded.data_dir), accounts, config.session_idle, config.session_max
            ),
            accounts,
            FailureLimiter(config.sign_in_failures, config.sign_in_lockout),
            tls_cert=self.tls.cert if self.tls else None,
        )
        if self.verifier is not None and config.oidc and config.oidc.client_id:
            self.state.oidc_sign_in = OidcSignIn(self.verifier, config.oidc.client_id, config.oidc.scope)
        self.app = build_app(self.state, config)
        self._services = services
        self._socket: socket.socket | None = None
        self._port: int | None = None  # the bound port (config port 0 picks one; kept across restarts)
        self._server: _Server | None = None
        self._done = asyncio.Event()
        services.outbox.add_commit_listener(self.latest.on_commit)
        services.outbox.add_commit_listener(self.feed.on_commit)

    def config_changed(self, loaded: LoadedConfig) -> None:
        """The running gateway took a new configuration (a deployment, a device added from the console or the
        CLI): answer from it, so devices, metrics and commissioning see what is now polled."""
        self.state.services = replace(self.state.services, loaded=loaded)

    @property
    def port(self) -> int:
        assert self._port is not None, "the API is not started"
        return self._port

    async def start(self) -> None:
        """Seed the latest values from the outbox and bind the listening socket."""
        await self._seed()
        self._bind()
        signs_in = f"issuer {self.verifier.config.issuer}" if self.verifier else "local accounts"
        log.info("API on %s (%s)", self.url, signs_in)

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def _bind(self) -> None:
        host, port = self.config.host, self._port if self._port is not None else self.config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and without it every
        # keep-alive response waits ~40 ms for the client's delayed ACK (Nagle)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ApiError(f"[api]: cannot listen on {host}:{port}: {exc.strerror}") from None
        sock.listen(1024)
        sock.setblocking(False)
        self._socket, self._port = sock, int(sock.getsockname()[1])

    async def _seed(self) -> None:
        services = self._services
        for spec in services.loaded.devices:
            with tenant_scope(services.tenants[spec.tenant]):
                rows = await services.outbox.read_device(
                    spec.name, [TELEMETRY], limit=_SEED_EVENTS, newest_first=True
                )
            for row in reversed(rows):
                self.latest.seed(spec.tenant, row.body)

    async def serve(self) -> None:
        if self._socket is None or self._socket.fileno() < 0:
            self._bind()  # uvicorn closes its sockets when it stops: a restart after a crash binds again
        assert self._socket is not None
        self._done.clear()
        for name in _SERVER_LOGGERS:
            _add_filter_once(logging.getLogger(name), _Redacted())
        proxies = [str(network) for network in self.config.trusted_proxies]
        config = uvicorn.Config(
            self.app,
            log_config=None,  # the gateway's logging
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=3,
            ws_ping_interval=20.0,
            ws_ping_timeout=20.0,
            ws_max_size=_WS_MAX_MESSAGE,
            # X-Forwarded-For only from configured proxies (uvicorn trusts loopback unless told otherwise)
            proxy_headers=bool(proxies),
            forwarded_allow_ips=proxies or None,
            ssl_certfile=self.tls.cert if self.tls else None,
            ssl_keyfile=self.tls.key if self.tls else None,
        )
        self._server = _Server(config)
        try:
            await self._server.serve(sockets=[self._socket])
        finally:
            self._done.set()

    async def stop(self, grace: float = 5.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), grace)
        if self.verifier is not None:
            await self.verifier.aclose()
        if self._socket is not None:
            self._socket.close()
        self.state.sessions.close()


class _Redacted(logging.Filter):
    """Redacts a record at its source: uvicorn puts `?access_token=` in its lines, and not every handler the
    records reach formats them through edge.ops.logs (a test's capture, a library's own handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


@dataclass(frozen=True)
class TlsFiles:
    cert: str
    key: str


def tls_files(config_path: Path, config: ApiConfig) -> TlsFiles | None:
    """The certificate and key files of `[api]` (relative to the config file), checked to exist and load."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    cert, key = (
        (config_path.parent / config.tls_cert).resolve(),
        (config_path.parent / config.tls_key).resolve(),
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ApiError(f"[api] tls_cert {cert} / tls_key {key}: cannot be used: {exc}") from None
    return TlsFiles(str(cert), str(key))


def _add_filter_once(logger: logging.Logger, log_filter: logging.Filter) -> None:
    if not any(type(f) is type(log_filter) for f in logger.filters):
        logger.addFilter(log_filter)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document, as served at /openapi.json and committed as docs/openapi.json."""
    return build_app().openapi()
