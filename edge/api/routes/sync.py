"""Store-and-forward uplinks (what `edge sync status` shows), for the caller's tenant."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from edge.api.deps import State, Viewer
from edge.api.problems import PROBLEM_RESPONSES
from edge.outbox.inspect import uplink_status
from edge.sdk.tenancy import tenant_scope

router = APIRouter(prefix="/v1", tags=["sync"], responses=PROBLEM_RESPONSES)


@router.get(
    "/sync",
    summary="Per uplink: backlog, oldest pending, last success and error, dead letters, drops",
    response_model=list[dict[str, Any]],
)
async def sync_status(state: State, caller: Viewer) -> list[dict[str, Any]]:
    outbox = state.services.outbox
    contexts = {caller.tenant: caller.context}

    def read() -> list[dict[str, Any]]:
        with tenant_scope(caller.context), outbox.inspector() as inspector:  # the caller's tenant's store
            return uplink_status(inspector, contexts)  # the same read-only view as `edge sync status`

    return await asyncio.to_thread(read)
