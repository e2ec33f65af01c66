"""Devices, their points' latest values, point history from the outbox, and point writes.

Latest values come from `LatestValues` (fed by outbox commits); history is read from the SQLite outbox and
reaches back as far as retention keeps rows. A device of another tenant is simply not found (404).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, Field

from edge.api.deps import ApiState, Caller, Operator, State, Viewer
from edge.api.limits import body_limit
from edge.api.live import PointValue
from edge.api.problems import PROBLEM_RESPONSES, Problem
from edge.config.suggest import listing
from edge.devices.commands import CommandRejected, WriteRequest, parse_write_payload, parse_write_priority
from edge.sdk.drivers import DeviceSpec
from edge.sdk.errors import UnknownTarget
from edge.sdk.events import TELEMETRY, rfc3339
from edge.sdk.points import PointConfig, Scalar

router = APIRouter(prefix="/v1", tags=["devices"], responses=PROBLEM_RESPONSES)

DeviceName = Annotated[str, Path(description="Device name (unique in the gateway).")]
PointName = Annotated[str, Path(description="Point name within the device.")]
_HISTORY_SCAN = 20  # at most this many pages of a device's events are read for one history page
_MAX_POSITION = 2**63 - 1  # outbox positions are SQLite rowids (signed 64-bit)
_MAX_WRITE_BODY = 16_384  # a value and a request id
MAX_REQUEST_ID = 128  # characters; echoed in the result topic, the event and the answer


class PointState(BaseModel):
    device: str
    site: str
    point: str
    unit: str | None
    writable: bool
    value: Scalar | None = Field(description="Latest value; null before the first reading.")
    quality: str | None = Field(description="good, uncertain or bad; null before the first reading.")
    reason: str | None = None
    time: str | None = Field(default=None, description="Sample time of the latest value (RFC 3339).")
    sequence: int | None = None
    brick: str | None = Field(default=None, description="The point's Brick class, if it has one.")
    haystack: list[str] = Field(default_factory=list, description="The point's Haystack marker tags.")


class DeviceInfo(BaseModel):
    name: str
    site: str
    tenant: str
    driver: str
    profile: str
    enabled: bool
    up: bool | None = Field(description="null until the first poll finished")
    last_error: str | None
    polls: int
    failed_polls: int
    points: int


class DeviceDetail(DeviceInfo):
    point_values: list[PointState]


class Sample(BaseModel):
    time: str
    value: Scalar | None
    quality: str
    unit: str | None = None
    reason: str | None = None
    sequence: int | None = None
    position: int = Field(description="Outbox position of the event that carried it.")


class HistoryPage(BaseModel):
    device: str
    point: str
    samples: list[Sample]
    next_cursor: int | None = Field(
        description="Pass as ?cursor= for the next page; null when there is none."
    )


class WriteResult(BaseModel):
    device: str
    point: str
    value: Scalar | None
    ok: bool
    request_id: str | None = None
    reason: str | None = Field(
        default=None,
        description="The device took the write with a remark (a BACnet error after applying it, with what it"
        " holds).",
    )


def _devices(state: ApiState, caller: Caller) -> list[DeviceSpec]:
    return [d for d in state.services.loaded.devices if d.tenant == caller.tenant]


def _device(state: ApiState, caller: Caller, name: str) -> DeviceSpec:
    spec = state.services.loaded.device(name)
    if spec is None or spec.tenant != caller.tenant:
        raise Problem(
            404, f"tenant {caller.tenant!r} has no device {name!r}", device=name, tenant=caller.tenant
        )
    return spec


def _point(spec: DeviceSpec, name: str) -> PointConfig:
    published = [p for p in spec.points if p.publish]
    point = next((p for p in published if p.name == name), None)
    if point is None:
        points = listing(name, (p.name for p in published))
        raise Problem(
            404,
            f"device {spec.name!r} has no point {name!r} (points of {spec.name}: {points})",
            device=spec.name,
            point=name,
        )
    return point


def _info(state: ApiState, spec: DeviceSpec) -> dict[str, Any]:
    stats = state.services.stats.devices.get(spec.name)
    return {
        "name": spec.name,
        "site": spec.site,
        "tenant": spec.tenant,
        "driver": spec.driver,
        "profile": spec.profile,
        # a lookup, not a scan of every polled device for each device listed (device names are unique)
        "enabled": (spec.tenant, spec.site, spec.name) in state.services.polled,
        "up": stats.up if stats else None,
        "last_error": stats.last_error if stats else None,
        "polls": stats.polls if stats else 0,
        "failed_polls": stats.failed_polls if stats else 0,
        "points": sum(1 for p in spec.points if p.publish),
    }


def _state(
    spec: DeviceSpec, point: PointConfig, latest: PointValue | None, stamps: dict[float, str]
) -> dict[str, Any]:
    """A PointState as a plain dict: the latest-values routes skip per-point model validation (hot path).

    `stamps` memoises formatted sample times: the points of one event share theirs."""
    tags = {"brick": point.brick, "haystack": list(point.haystack)}
    if latest is None:
        return {
            "device": spec.name, "site": spec.site, "point": point.name, "unit": point.unit,
            "writable": point.writable, "value": None, "quality": None, "reason": None, "time": None,
            "sequence": None, **tags,
        }  # fmt: skip
    stamp = stamps.get(latest.time)
    if stamp is None:
        stamp = stamps[latest.time] = rfc3339(latest.time)
    return {
        "device": spec.name,
        "site": spec.site,
        "point": point.name,
        "unit": point.unit,
        "writable": point.writable,
        "value": latest.value,
        "quality": latest.quality,
        "reason": latest.reason,
        "time": stamp,
        "sequence": latest.sequence,
        **tags,
    }


def _values(
    state: ApiState, spec: DeviceSpec, wanted: Callable[[PointConfig], bool] = lambda _: True
) -> list[dict[str, Any]]:
    latest = state.latest.device(spec.tenant, spec.name)
    stamps: dict[float, str] = {}
    return [_state(spec, p, latest.get(p.name), stamps) for p in spec.points if p.publish and wanted(p)]


def tagged(brick: str | None, tags: Sequence[str]) -> Callable[[PointConfig], bool]:
    """Points of Brick class `brick` (if given) carrying every Haystack tag of `tags`."""
    required = frozenset(t for raw in tags for t in raw.split(",") if t)
    return lambda p: (brick is None or p.brick == brick) and required <= frozenset(p.haystack)


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/devices", summary="The tenant's devices with their health", response_model=list[DeviceInfo])
async def list_devices(state: State, caller: Viewer) -> Response:
    # plain dicts through orjson, as the latest-values routes: a model per device, validated and then
    # serialised again by FastAPI, cost an operator's every read (and a tenant's every admitted one) the most
    return _json([_info(state, d) for d in _devices(state, caller)])


@router.get(
    "/devices/{device}", summary="One device with its points' latest values", response_model=DeviceDetail
)
async def get_device(state: State, caller: Viewer, device: DeviceName) -> Response:
    spec = _device(state, caller, device)
    return _json({**_info(state, spec), "point_values": _values(state, spec)})


@router.get(
    "/points",
    summary="Latest value, quality and time of every point of the tenant",
    response_model=list[PointState],
)
async def latest_values(
    state: State,
    caller: Viewer,
    site: Annotated[str | None, Query(description="Only this site.")] = None,
    device: Annotated[str | None, Query(description="Only this device.")] = None,
    brick: Annotated[str | None, Query(description="Only points of this Brick class.")] = None,
    tag: Annotated[
        list[str], Query(description="Only points with these Haystack tags (repeat, or comma-separated).")
    ] = [],  # noqa: B006  (FastAPI copies a query default; a list is how it declares a repeated one)
) -> Response:
    out: list[dict[str, Any]] = []
    wanted = tagged(brick, tag)
    for spec in _devices(state, caller):
        if (site is None or spec.site == site) and (device is None or spec.name == device):
            out += _values(state, spec, wanted)
    return _json(out)


@router.get("/devices/{device}/points/{point}", summary="One point's latest value", response_model=PointState)
async def get_point(state: State, caller: Viewer, device: DeviceName, point: PointName) -> Response:
    spec = _device(state, caller, device)
    config = _point(spec, point)
    return _json(_state(spec, config, state.latest.device(spec.tenant, spec.name).get(point), {}))


@router.get(
    "/devices/{device}/points/{point}/history",
    summary="A point's stored samples by time range, oldest first, paginated by outbox position",
    description="History reaches back as far as the outbox's retention keeps rows ([storage.retention]).",
)
async def point_history(
    state: State,
    caller: Viewer,
    device: DeviceName,
    point: PointName,
    since: Annotated[
        AwareDatetime | None, Query(description="Samples at or after this time (RFC 3339, with its offset).")
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="Samples before this time (RFC 3339, with its offset).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Samples per page.")] = 100,
    cursor: Annotated[
        int, Query(ge=0, le=_MAX_POSITION, description="next_cursor of the previous page.")
    ] = 0,
) -> HistoryPage:
    spec = _device(state, caller, device)
    _point(spec, point)
    if since is not None and until is not None and until <= since:
        raise Problem(422, "'until' must be later than 'since'")
    samples: list[Sample] = []
    position, exhausted = cursor, False
    for _ in range(_HISTORY_SCAN):  # a point missing from many events (pushed subsets) costs bounded reads
        rows = await state.services.outbox.read_device(  # in the caller's tenant scope (deps.role)
            spec.name,
            [TELEMETRY],
            after=position,
            since=since.timestamp() if since else None,
            until=until.timestamp() if until else None,
            limit=limit,
        )
        for row in rows:
            position = row.position
            sample = orjson.loads(row.body)["data"]["points"].get(point)
            if sample is not None:
                samples.append(
                    Sample(time=rfc3339(row.time), sequence=row.sequence, position=row.position, **sample)
                )
                if len(samples) == limit:
                    break
        if len(samples) == limit:
            break
        if len(rows) < limit:
            exhausted = True
            break
    more = not exhausted
    return HistoryPage(device=device, point=point, samples=samples, next_cursor=position if more else None)


_WRITE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["value"],
                            "properties": {
                                "value": {"type": ["number", "boolean", "string", "null"]},
                                "id": {
                                    "type": "string",
                                    "maxLength": MAX_REQUEST_ID,
                                    "description": "Your request id, echoed back.",
                                },
                            },
                        },
                        {"type": ["number", "boolean", "string", "null"]},
                    ]
                }
            }
        },
    }
}


@router.put(
    "/devices/{device}/points/{point}/value",
    summary="Write a point (operator): the same checks, result topic and event as an MQTT write request",
    openapi_extra=_WRITE_BODY | body_limit(_MAX_WRITE_BODY),
    responses={
        502: PROBLEM_RESPONSES[503] | {"description": "The device cannot be reached"},
        504: PROBLEM_RESPONSES[503] | {"description": "The device did not answer in time"},
    },
)
async def write_point(
    state: State, caller: Operator, device: DeviceName, point: PointName, request: Request
) -> WriteResult:
    spec = _device(state, caller, device)
    _point(spec, point)
    try:
        # NaN and Infinity go on to the command path's check, which names the point's range
        body = await request.body()
        value, request_id = parse_write_payload(body, finite_only=False)
        priority = parse_write_priority(body)
    except CommandRejected as exc:
        raise Problem(422, str(exc), device=device, point=point) from None
    if request_id is not None and len(request_id) > MAX_REQUEST_ID:
        raise Problem(
            422,
            f"'id' is {len(request_id)} characters long; at most {MAX_REQUEST_ID}",
            device=device,
            point=point,
        )
    handler = state.services.commands()
    if handler is None:
        raise Problem(503, "the gateway is not accepting writes (it is starting or stopping)")
    write = WriteRequest(caller.tenant, spec.site, spec.name, point, value, request_id, priority)
    try:
        outcome = await handler.write(write)
    except UnknownTarget as exc:
        raise Problem(409, f"{exc} (the device is disabled)", device=device) from None
    if not outcome.ok:
        status = {"timeout": 504, "unreachable": 502}.get(outcome.failure or "", 422)
        finite = not isinstance(value, float) or math.isfinite(value)  # JSON has no NaN: the detail names it
        raise Problem(
            status,
            f"write refused: {outcome.reason}",
            device=device,
            point=point,
            value=value if finite else None,
        )
    return WriteResult(
        device=device, point=point, value=value, ok=True, request_id=request_id, reason=outcome.reason
    )
