"""Store-and-forward uplinks (what `edge sync status` shows), for the caller's tenant."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from edge.api.deps import State, Viewer
from edge.api.problems import PROBLEM_RESPONSES
from edge.outbox.inspect import OutboxInspector, uplink_status

router = APIRouter(prefix="/v1", tags=["sync"], responses=PROBLEM_RESPONSES)


@router.get(
    "/sync",
    summary="Per uplink: backlog, oldest pending, last success and error, dead letters, drops",
    response_model=list[dict[str, Any]],
)
async def sync_status(state: State, caller: Viewer) -> list[dict[str, Any]]:
    path = state.services.outbox.path
    contexts = {caller.tenant: caller.context}

    def read() -> list[dict[str, Any]]:
        with OutboxInspector(path) as inspector:  # the same read-only path as `edge sync status`
            return uplink_status(inspector, contexts)

    return await asyncio.to_thread(read)
