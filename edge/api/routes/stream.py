"""Live events over a WebSocket, in the caller's tenant only, filtered by type, site, device and point.

`GET /v1/events/stream?type=org.edgegw.telemetry&device=inv-01&point=ac_power` (each filter repeatable or
comma-separated). The token comes in the `Authorization` header, or for browsers in `?access_token=`; the console's
session cookie works too, from a page of the gateway's own origin only (a WebSocket has no same-origin
policy, so another site's page could otherwise open one with the user's cookie).
Each message is one CloudEvent (JSON text) as stored in the outbox. A client that falls `ws_queue` events
behind is closed with code 1013 and the reason; it can fetch what it missed from the history endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket

from edge.api.auth import Principal
from edge.api.deps import ApiState, authenticate_token, bearer, resolve_tenant
from edge.api.live import EventFilter, Subscriber
from edge.api.problems import Problem
from edge.api.sessions import SESSION_COOKIE

log = logging.getLogger(__name__)
router = APIRouter(tags=["events"])

CLOSE_UNAUTHORIZED = 4401  # 4000-4999: application codes; mirrors HTTP 401/403
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY_FAILURES = 4429
CLOSE_TRY_LATER = 1013  # "try again later": too slow a reader, or the token issuer is unreachable
CLOSE_TOO_SLOW = CLOSE_TRY_LATER


def _set(websocket: WebSocket, name: str) -> frozenset[str]:
    return frozenset(
        v.strip() for raw in websocket.query_params.getlist(name) for v in raw.split(",") if v.strip()
    )


@router.websocket("/v1/events/stream")
async def stream(websocket: WebSocket) -> None:
    state: ApiState = websocket.app.state.api
    await websocket.accept()
    params = websocket.query_params
    try:
        who = await _caller(websocket, state)
        context = resolve_tenant(state, who, params.get("tenant"))
    except Problem as exc:
        code = {401: CLOSE_UNAUTHORIZED, 429: CLOSE_TOO_MANY_FAILURES, 503: CLOSE_TRY_LATER}.get(
            exc.status, CLOSE_FORBIDDEN
        )
        await websocket.close(code, exc.detail[:120])
        return
    limits = state.services.limits
    refusal = limits.ws_client(context.tenant_id, state.feed.clients([context.tenant_id])) if limits else None
    if refusal is not None:
        log.warning("live stream of tenant %s refused: %s", context.tenant_id, refusal)
        await websocket.close(CLOSE_TRY_LATER, refusal[:120])
        return
    wanted = EventFilter(
        _set(websocket, "type"),
        _set(websocket, "site"),
        _set(websocket, "device"),
        _set(websocket, "point"),
        _set(websocket, "brick"),
        _set(websocket, "tag"),
    )
    subscriber = state.feed.subscribe(context.tenant_id, wanted)
    try:
        await _pump(websocket, subscriber, who.valid_until)
    finally:
        state.feed.unsubscribe(subscriber)


async def _caller(websocket: WebSocket, state: ApiState) -> Principal:
    client = websocket.client.host if websocket.client else "-"
    token = params_token = websocket.query_params.get("access_token")
    header = websocket.headers.get("authorization")
    if params_token is None and header is None and SESSION_COOKIE in websocket.cookies:
        origin, host = websocket.headers.get("origin", ""), websocket.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise Problem(403, f"a session stream must come from the gateway's own pages, not {origin!r}")
        return state.sessions.get(websocket.cookies[SESSION_COOKIE]).principal
    token = token or bearer(header)
    return await authenticate_token(state, token, client)


async def _pump(websocket: WebSocket, subscriber: Subscriber, valid_until: float | None) -> None:
    """Send queued events until the client leaves, falls too far behind or its token expires."""
    sender = asyncio.create_task(_send(websocket, subscriber), name="ws-send")
    reader = asyncio.create_task(_read_until_closed(websocket), name="ws-read")
    overflow = asyncio.create_task(subscriber.overflowed.wait(), name="ws-overflow")
    # a stream lives no longer than its token: a revoked tenant or role ends at the token's expiry
    expiry = asyncio.create_task(asyncio.sleep(max(0.0, (valid_until or math.inf) - time.time())))
    tasks = {sender, reader, overflow, expiry}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if overflow in done:
        reason = (
            f"too slow: {subscriber.queue.maxsize} events unread; reconnect and read the gap from history"
        )
        log.warning("live stream of tenant %s closed: %s", subscriber.tenant, reason)
        await _close(websocket, CLOSE_TOO_SLOW, reason)
    elif expiry in done:
        await _close(websocket, CLOSE_UNAUTHORIZED, "token expired: reconnect with a fresh token")


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):  # the peer may already be gone
        async with asyncio.timeout(2.0):
            await websocket.close(code, reason[:120])


async def _send(websocket: WebSocket, subscriber: Subscriber) -> None:
    while True:
        event = await subscriber.queue.get()
        await websocket.send_text(subscriber.filter.render(event).decode())
        subscriber.delivered += 1


async def _read_until_closed(websocket: WebSocket) -> None:
    while True:  # clients have nothing to say; reading notices their close
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
