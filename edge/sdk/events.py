"""CloudEvents 1.0 (structured JSON mode) as the gateway writes them, and the schemas of their data.

An event is serialised exactly once, when it is created: the same bytes are stored in the outbox, published
on MQTT and sent to the cloud. Hot-path construction uses plain dicts and orjson; the pydantic models below
define and export the data schemas (see `edge events schema`) and validate events coming *into* the gateway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import uuid_utils
from pydantic import BaseModel, ConfigDict, Field

from edge.sdk.points import Quality, Scalar
from edge.sdk.versions import ADAPTORS

__all__ = [
    "ASSET_FAILED",
    "CLOUD_RESULT",
    "COMMAND_RESULT",
    "DEVICE_STATUS",
    "MODULE_COMMAND",
    "MODULE_COMMAND_RESULT",
    "OUTBOX_DROPPED",
    "SEQUENCE_DIGITS",
    "SPECVERSION",
    "TELEMETRY",
    "AssetFailedData",
    "CloudEventEnvelope",
    "CloudResultData",
    "CommandResultData",
    "DeviceStatusData",
    "Event",
    "ModuleCommandData",
    "ModuleCommandResultData",
    "OutboxDroppedData",
    "PointSample",
    "StoredEvent",
    "TelemetryData",
    "json_schemas",
    "make_event",
    "new_event_id",
    "rfc3339",
]

SPECVERSION = "1.0"

# The documented event types (docs/events.md). Each has a data schema and a MAJOR.MINOR data version.
TELEMETRY = "org.edgegw.telemetry"
DEVICE_STATUS = "org.edgegw.device.status"
COMMAND_RESULT = "org.edgegw.command.result"
OUTBOX_DROPPED = "org.edgegw.outbox.dropped"
ASSET_FAILED = "org.edgegw.asset.failed"  # ASSET_FAILED_ALERT: raised and cleared by domain modules
MODULE_COMMAND = "org.edgegw.module.command"  # a request for a module (alarm acknowledgement, ...)
MODULE_COMMAND_RESULT = "org.edgegw.module.command.result"  # the module's (or the kernel's refusal) answer
CLOUD_RESULT = "org.edgegw.cloud.result"  # what became of a platform's command, deployment or entitlements

DATA_VERSIONS: dict[str, str] = {
    TELEMETRY: "1.1",  # 1.1: optional brick / haystack per point
    DEVICE_STATUS: "1.0",
    COMMAND_RESULT: "1.0",
    OUTBOX_DROPPED: "1.0",
    MODULE_COMMAND: "1.0",
    MODULE_COMMAND_RESULT: "1.0",
    ASSET_FAILED: "1.0",
    CLOUD_RESULT: "1.0",
}

SEQUENCE_DIGITS = 16  # the CloudEvents sequence extension is a lexicographically ordered string


class PointSample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: Scalar | None
    unit: str | None = None
    quality: Quality
    raw: Scalar | None = Field(
        default=None, description="The value read before scaling, when scaling applied."
    )
    reason: str | None = Field(default=None, description="Why the quality is not good.")
    brick: str | None = Field(default=None, description="The point's Brick class, when it has one (1.1).")
    haystack: list[str] | None = Field(
        default=None, description="The point's Haystack marker tags, when it has some (1.1)."
    )


class TelemetryData(BaseModel):
    """One poll of one device: every published point with value, unit and quality."""

    model_config = ConfigDict(extra="forbid")
    device: str
    site: str
    points: dict[str, PointSample]


class DeviceStatusData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device: str
    site: str
    status: str = Field(description="'up', 'down', or 'stopped' (the gateway stopped cleanly)")
    reason: str | None = None


class CommandResultData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device: str
    site: str
    point: str
    value: Scalar | None
    ok: bool
    reason: str | None = None
    request_id: str | None = None


class OutboxDroppedData(BaseModel):
    """Events of this tenant that a retention limit removed before every consumer had them, or refused."""

    model_config = ConfigDict(extra="forbid")
    limit: Literal["max_age", "max_bytes"] = Field(description="The tenant's limit that was exceeded.")
    action: Literal["dropped", "refused"] = Field(
        description="'dropped': deleted from the outbox before every consumer had them (oldest first); "
        "'refused': never stored (policy refuse_newest)."
    )
    events: int = Field(ge=0, description="Events affected since the previous report.")
    bytes: int = Field(ge=0, description="Their size (event bytes).")
    first_time: str | None = Field(default=None, description="Sample time of the oldest affected event.")
    last_time: str | None = Field(default=None, description="Sample time of the newest affected event.")
    total_events: int = Field(ge=0, description="Events affected this way since the outbox was created.")
    consumers: list[str] = Field(
        default_factory=list, description="Consumers that had not received the dropped events."
    )


class ModuleCommandData(BaseModel):
    """A command for one module of the tenant, from MQTT (`{prefix}/{tenant}/cmd/module/{module}/{action}`),
    the CLI or the API; the module answers with an `org.edgegw.module.command.result` event."""

    model_config = ConfigDict(extra="forbid")
    module: str
    action: str
    args: dict[str, Any] = Field(default_factory=dict)
    request_id: str


class ModuleCommandResultData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    module: str
    action: str
    request_id: str
    ok: bool
    reason: str | None = Field(default=None, description="Why the command was refused or failed.")
    result: dict[str, Any] = Field(default_factory=dict, description="What the module did, when ok.")


class AssetFailedData(BaseModel):
    """An asset (inverter, lift, fan, zone) failed or recovered: one event when raised, one when cleared."""

    model_config = ConfigDict(extra="forbid")
    state: Literal["raised", "cleared"]
    alert_id: str = Field(description="Stable id of this alert: module, kind, site and asset.")
    site: str
    asset: str = Field(description="The device (or zone) that failed.")
    kind: str = Field(description="What failed, e.g. 'stuck', 'door', 'fault_code', 'offline'.")
    severity: Literal["critical", "major", "minor", "warning"]
    cause: str = Field(description="Readable cause, with the values that triggered it.")
    since: str = Field(description="When the condition began (RFC 3339).")


class CloudResultData(BaseModel):
    """The outcome of one message from the tenant's platform (downlink): a command executed, refused or
    failed, a deployment applied or rolled back, entitlements applied. The uplink carries it back."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(description="The message's id (its `jti`); null when it could not be read.")
    kind: str | None = Field(
        description="'point.write', 'module.command', 'deployment' or 'entitlements' (null: unreadable)."
    )
    status: Literal["done", "accepted", "refused", "failed", "unreachable", "timeout", "rolled_back"] = Field(
        description="done: executed (a deployment: applied); accepted: handed to the module, which answers "
        "with its own result; refused: not acted on (signature, tenant, expiry, replay, checks); failed, "
        "unreachable, timeout: the device's answer; rolled_back: a deployment undone."
    )
    ok: bool
    reason: str | None = Field(default=None, description="Why it was refused, failed or rolled back.")
    target: str | None = Field(
        default=None, description="'site/device.point', 'module/action', or the configuration version."
    )
    detail: dict[str, Any] = Field(default_factory=dict, description="Request id, devices changed, flags.")


DATA_SCHEMAS: dict[str, type[BaseModel]] = {
    TELEMETRY: TelemetryData,
    DEVICE_STATUS: DeviceStatusData,
    COMMAND_RESULT: CommandResultData,
    OUTBOX_DROPPED: OutboxDroppedData,
    MODULE_COMMAND: ModuleCommandData,
    MODULE_COMMAND_RESULT: ModuleCommandResultData,
    ASSET_FAILED: AssetFailedData,
    CLOUD_RESULT: CloudResultData,
}


@dataclass(frozen=True, slots=True)
class Event:
    """A serialised event on its way to the outbox, with the routing facts kept beside the bytes."""

    id: str
    tenant: str
    type: str
    subject: str
    device: str | None
    sequence: int | None
    time: float
    body: bytes
    data: dict[str, Any] | None = None  # the unserialised data, for in-process consumers; never stored


def new_event_id() -> str:
    """A UUIDv7: unique and ordered by creation time."""
    return str(uuid_utils.uuid7())


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text: polls share their second


def rfc3339(ts: float) -> str:
    """`ts` as RFC 3339 UTC with milliseconds (truncated), e.g. 2026-05-01T12:00:00.250Z.

    The same text as `datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")` with a Z (microseconds
    rounded first, as datetime does), at a quarter of the cost: every event of the same second reuses its
    formatted date and time."""
    second = math.floor(ts)
    micros = round((ts - second) * 1e6)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    if _second[0] != second:
        _second[0], _second[1] = second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second[1]}.{micros // 1000:03d}Z"


def make_event(
    *,
    type: str,
    source: str,
    subject: str,
    tenant: str,
    time: float,
    data: dict[str, Any],
    device: str | None = None,
    sequence: int | None = None,
    dataversion: str | None = None,
) -> Event:
    event_id = new_event_id()
    envelope: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": event_id,
        "source": source,
        "type": type,
        "subject": subject,
        "time": rfc3339(time),
        "datacontenttype": "application/json",
        "tenantid": tenant,
        "dataversion": dataversion or DATA_VERSIONS.get(type, "1.0"),
    }
    if sequence is not None:
        envelope["sequence"] = f"{sequence:0{SEQUENCE_DIGITS}d}"
    envelope["data"] = data
    return Event(
        event_id, tenant, type, subject, device, sequence, time, _compact(orjson.dumps(envelope)), data
    )


def _compact(encoded: bytes) -> bytes:
    """A copy of orjson's output in a block of its own size. orjson (3.13) returns bytes in the buffer it wrote
    into, grown by doubling and never shrunk: a 2 KB event holds 16 KB. An event's bytes live on in the commit
    hand-over, the consumers' batches and the modules' parse cache, so the copy (a memcpy) is worth it."""
    return bytes(memoryview(encoded))


class CloudEventEnvelope(BaseModel):
    """Validation of an event that arrives from outside (a module, a local system)."""

    model_config = ConfigDict(extra="allow")
    specversion: str = Field(pattern=r"^1\.0$")
    id: str = Field(min_length=1, max_length=128)
    source: str = Field(min_length=1, max_length=512)
    type: str = Field(min_length=1, max_length=256)
    subject: str | None = None
    time: datetime | None = None
    datacontenttype: str | None = None
    data: Any = None


def json_schemas() -> dict[str, dict[str, Any]]:
    return {event_type: model.model_json_schema() for event_type, model in DATA_SCHEMAS.items()}


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A committed event as a consumer receives it: its outbox position, envelope fields and CloudEvent bytes."""

    position: int  # the outbox row id: total order of commits
    id: str
    tenant: str
    type: str
    subject: str
    device: str | None
    sequence: int | None
    time: float
    body: bytes


@ADAPTORS.adaptor(TELEMETRY, "1.1", "1.0")
def _telemetry_without_tags(data: dict[str, Any]) -> dict[str, Any]:
    """Telemetry 1.1 for a module that handles 1.0 only: the same samples without the semantic tags."""
    points = {
        name: {k: v for k, v in sample.items() if k not in ("brick", "haystack")}
        for name, sample in data.get("points", {}).items()
    }
    return {**data, "points": points}
