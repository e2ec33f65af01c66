"""API requests counted for `/metrics` (edge.api.metrics): `RequestMetrics` is the ASGI middleware that counts
each request by method, route template and status once the router has matched it (never by its path, so
the label values stay bounded)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass
class RequestCounts:
    """(method, route template, status) -> requests, and (method, route) -> seconds spent answering."""

    requests: dict[tuple[str, str, str], int] = field(default_factory=dict)
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)


class RequestMetrics:
    def __init__(self, app: ASGIApp, counts: RequestCounts) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = "500"

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"  # a template, never the path
            method = scope["method"] if scope["method"] in _METHODS else "other"
            key = (method, route, status)
            self.counts.requests[key] = self.counts.requests.get(key, 0) + 1
            timed = (method, route)
            self.counts.seconds[timed] = self.counts.seconds.get(timed, 0.0) + time.perf_counter() - started


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
