"""Webhook subscriptions of the caller's tenant (edge.webhooks.WebhookStore; the same store `edge webhook` uses).

Reading needs the viewer role; creating, pausing, removing, rotating secrets and replaying need operator. The
store's calls block on SQLite, so they run in a worker thread, which keeps the caller's tenant scope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from edge.api.deps import Operator, State, Viewer
from edge.api.problems import PROBLEM_RESPONSES, Problem
from edge.webhooks import WebhookStore
from edge.webhooks.store import DeadDelivery, Subscription, SubscriptionNotFound

router = APIRouter(prefix="/v1", tags=["webhooks"], responses=PROBLEM_RESPONSES)

T = TypeVar("T")
_MAX_GRACE = 30 * 86_400.0
FilterValues = Annotated[list[str], Field(max_length=256)]


class SubscriptionInfo(BaseModel):
    id: str
    url: str
    types: list[str] = Field(description="Event types delivered; empty: every type.")
    sites: list[str]
    devices: list[str]
    points: list[str] = Field(description="Telemetry is trimmed to these points; empty: every point.")
    state: Literal["active", "paused"]
    state_reason: str | None
    created: float
    updated: float


class NewSubscription(BaseModel):
    url: str = Field(
        max_length=2048, description="http(s) URL; private, loopback and link-local hosts only if allowed."
    )
    types: FilterValues = []
    sites: FilterValues = []
    devices: FilterValues = []
    points: FilterValues = []
    paused: bool = False


class CreatedSubscriptionInfo(SubscriptionInfo):
    secret: str = Field(description="The signing secret (whsec_...), shown this once.")


class StateChange(BaseModel):
    state: Literal["active", "paused"]
    reason: str | None = Field(default=None, max_length=500)


class DeadDeliveryInfo(BaseModel):
    position: int
    event_id: str
    type: str
    subject: str
    reason: str
    dead_at: float
    attempts: int
    replay: bool


class Replayed(BaseModel):
    replayed: int


def _info(sub: Subscription) -> SubscriptionInfo:
    return SubscriptionInfo(
        id=sub.id,
        url=sub.url,
        types=list(sub.types),
        sites=list(sub.sites),
        devices=list(sub.devices),
        points=list(sub.points),
        state=sub.state,
        state_reason=sub.state_reason,
        created=sub.created,
        updated=sub.updated,
    )


async def _call(state: State, call: Callable[[WebhookStore], T]) -> T:
    store = state.services.webhooks()
    if store is None:
        raise Problem(503, "the gateway's webhook store is not open yet")
    try:
        return await asyncio.to_thread(call, store)
    except SubscriptionNotFound as exc:
        raise Problem(404, str(exc), subscription=exc.subscription_id) from None
    except ValueError as exc:
        raise Problem(422, str(exc)) from None


@router.get("/webhooks", summary="The tenant's webhook subscriptions")
async def list_subscriptions(state: State, caller: Viewer) -> list[SubscriptionInfo]:
    return [_info(s) for s in await _call(state, lambda store: store.list())]


@router.post("/webhooks", status_code=201, summary="Subscribe a URL to events; the secret is shown once")
async def add_subscription(body: NewSubscription, state: State, caller: Operator) -> CreatedSubscriptionInfo:
    created = await _call(
        state,
        lambda store: store.add(
            body.url,
            types=body.types,
            sites=body.sites,
            devices=body.devices,
            points=body.points,
            paused=body.paused,
        ),
    )
    return CreatedSubscriptionInfo(**_info(created.subscription).model_dump(), secret=created.secret)


@router.get("/webhooks/{subscription}", summary="One subscription")
async def get_subscription(subscription: str, state: State, caller: Viewer) -> SubscriptionInfo:
    return _info(await _call(state, lambda store: store.get(subscription)))


@router.patch("/webhooks/{subscription}", summary="Pause or resume deliveries")
async def change_state(
    subscription: str, body: StateChange, state: State, caller: Operator
) -> SubscriptionInfo:
    reason = body.reason or (f"paused by {caller.principal.subject}" if body.state == "paused" else None)
    return _info(await _call(state, lambda store: store.set_state(subscription, body.state, reason)))


@router.delete("/webhooks/{subscription}", status_code=204, summary="Remove a subscription")
async def remove_subscription(subscription: str, state: State, caller: Operator) -> Response:
    await _call(state, lambda store: store.remove(subscription))
    return Response(status_code=204)


@router.post(
    "/webhooks/{subscription}/rotate-secret", summary="A new secret; the old one signs too for a while"
)
async def rotate_secret(
    subscription: str,
    state: State,
    caller: Operator,
    grace: Annotated[
        float,
        Query(
            ge=0,
            le=_MAX_GRACE,
            allow_inf_nan=False,
            description="Seconds the old secret keeps signing too.",
        ),
    ] = 86_400.0,
) -> CreatedSubscriptionInfo:
    created = await _call(state, lambda store: store.rotate_secret(subscription, grace))
    return CreatedSubscriptionInfo(**_info(created.subscription).model_dump(), secret=created.secret)


@router.get("/webhooks/{subscription}/dead-letters", summary="Events the subscription gave up on")
async def dead_letters(
    subscription: str,
    state: State,
    caller: Viewer,
    limit: Annotated[int, Query(ge=1, le=1000, description="Dead letters at most, oldest first.")] = 100,
) -> list[DeadDeliveryInfo]:
    rows: list[DeadDelivery] = await _call(state, lambda store: store.dead_letters(subscription, limit))
    return [DeadDeliveryInfo(**{f: getattr(d, f) for f in DeadDeliveryInfo.model_fields}) for d in rows]


@router.post("/webhooks/{subscription}/replay", summary="Offer the subscription's dead letters again")
async def replay(subscription: str, state: State, caller: Operator) -> Replayed:
    return Replayed(replayed=await _call(state, lambda store: store.replay(subscription)))
