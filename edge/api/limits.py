"""Request bodies are limited before routing and authentication, so no client can make the gateway buffer a
large body (one unauthenticated 200 MB POST used to grow it by 500 MiB before its 401).

`BodyLimit` is a pure ASGI middleware in front of the router. Every body is held to `[api] max_body` bytes,
unless its route declares its own limit with `openapi_extra=body_limit(n)` (shown in the OpenAPI document as
`x-max-body-bytes`): larger where a larger body is legitimate, smaller where it is not. A `Content-Length`
over the limit is answered 413 at once, before a byte of the body is read; a chunked body is counted as the
route reads it and refused with 413 as soon as it passes the limit. Either answer closes the connection, so
the rest of the body is never read.

FastAPI's own `max_body_size` does the same counting but answers text/plain; this API answers every error as
problem+json (edge.api.problems) and closes the connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.api.problems import problem_response

MAX_BODY_EXTENSION = "x-max-body-bytes"
_CLOSE = {"Connection": "close"}  # the rest of a refused body is not worth reading


def body_limit(limit: int) -> dict[str, Any]:
    """`openapi_extra` for a route whose body limit differs from `[api] max_body`."""
    return {MAX_BODY_EXTENSION: limit}


def _too_large(limit: int) -> str:
    return f"the request body is larger than this route accepts ({limit} bytes)"


class BodyLimit:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], default: int) -> None:
        self.app = app
        self.default = default
        self._own = [(route, int(extra[MAX_BODY_EXTENSION])) for route in routes if (extra := _extra(route))]

    def limit_for(self, scope: Scope) -> int:
        """The limit of the route that will serve this request: its own, else the default."""
        for route, limit in self._own:
            match, _ = route.matches(scope)  # a pure check of path and method; routing comes later
            if match is Match.FULL:
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, streamed = _framing(scope)
        if not streamed and not length:  # no body (every GET): nothing to count
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        if length is not None and length > limit:
            await problem_response(413, _too_large(limit), scope["path"], _CLOSE)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # rendered as problem+json by edge.api.problems
                    raise HTTPException(413, _too_large(limit), headers=_CLOSE)
            return message

        await self.app(scope, limited, send)


def _extra(route: BaseRoute) -> dict[str, Any] | None:
    extra = getattr(route, "openapi_extra", None)
    return extra if isinstance(extra, dict) and MAX_BODY_EXTENSION in extra else None


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """(Content-Length or None, whether the body arrives without a usable length: chunked)."""
    length: int | None = None
    streamed = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                streamed = True  # not a number (the server refuses it first): count what arrives
        elif name == b"transfer-encoding":
            streamed = True
    return length, streamed
