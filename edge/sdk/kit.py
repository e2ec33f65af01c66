"""Small helpers every domain module needs, so each module holds only its own logic.

- `Telemetry.from_event`: a delivered telemetry event as typed samples (pushed events carry only the points
  that changed, so modules keep the last value of each point they follow).
- `parse_config`: a module's pydantic config model from its `[modules.config]` table; an error names the
  field path (`modules.<name>.config.<path>`) and the reason.
- `EventBatches`: events in batches, with the state they changed stored once per batch.
- `AlertBook`: raise and clear `org.edgegw.asset.failed` alerts once each, remembered in the module's store.
- `as_bool`: binary point values across protocols (True/False, BACnet "active"/"inactive" or state texts
  such as "normal"/"alarm", 0/1, on/off).

Periodic work (time-based conditions: "for longer than", stale data) is `ModuleContext.every`: the kernel
owns those tasks, per entitled tenant.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from edge.sdk.errors import EdgeError
from edge.sdk.events import ASSET_FAILED, TELEMETRY, StoredEvent, rfc3339
from edge.sdk.modules import ModuleContext
from edge.sdk.store import StateStore
from edge.sdk.tenancy import current_tenant

__all__ = [
    "AlertBook",
    "EventBatches",
    "ModuleConfigError",
    "Sample",
    "Telemetry",
    "as_bool",
    "parse_config",
]

M = TypeVar("M", bound=BaseModel)
Publish = Callable[[str, str, dict[str, Any]], Awaitable[str]]  # ModuleContext.publish


class ModuleConfigError(EdgeError):
    """A module's configuration is invalid: every issue names the field path and the reason."""

    def __init__(self, module: str, issues: Sequence[str]) -> None:
        self.module = module
        self.issues = list(issues)
        super().__init__("; ".join(self.issues))


def parse_config(model: type[M], raw: Mapping[str, Any], module: str) -> M:
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        issues = []
        for error in exc.errors():
            path = ".".join(str(part) for part in error["loc"])
            issues.append(f"modules.{module}.config{'.' + path if path else ''}: {error['msg']}")
        raise ModuleConfigError(module, issues) from None


@dataclass(frozen=True, slots=True)
class Sample:
    value: Any
    quality: str
    unit: str | None = None

    @property
    def good(self) -> bool:
        return self.quality == "good" and self.value is not None


# Parsed telemetry of the last events, shared by the modules of this process: each domain module reads every
# telemetry event, and parsing it once instead of once per module was a tenth of the building's gateway CPU.
_PARSED: dict[tuple[bytes, str, str, float], Telemetry | None] = {}
_PARSED_KEPT = 128  # ~1.7 s of the building's events: modules fed from memory read the same ones together


@dataclass(frozen=True, slots=True)
class Telemetry:
    event_id: str
    tenant: str
    site: str
    device: str
    time: float
    points: Mapping[str, Sample]  # read-only: the same parse is handed to every module

    @classmethod
    def from_event(cls, event: StoredEvent) -> Telemetry | None:
        """The event's samples, or None when it is not a well-formed telemetry event."""
        if event.type != TELEMETRY:
            return None
        # the body itself is in the key (an adapted event has the same id and other bytes); the same bytes
        # object reaches every module, so its hash is computed once
        key = (event.body, event.id, event.tenant, event.time)
        if key in _PARSED:
            return _PARSED[key]
        parsed = cls._parse(event)
        if len(_PARSED) >= _PARSED_KEPT:
            del _PARSED[next(iter(_PARSED))]  # the oldest
        _PARSED[key] = parsed
        return parsed

    @classmethod
    def _parse(cls, event: StoredEvent) -> Telemetry | None:
        data = orjson.loads(event.body).get("data")
        if not isinstance(data, dict) or not isinstance(data.get("points"), dict):
            return None
        points = {}
        for name, sample in data["points"].items():
            if isinstance(sample, dict):
                points[name] = Sample(
                    sample.get("value"), str(sample.get("quality", "bad")), sample.get("unit")
                )
        return cls(
            event.id,
            event.tenant,
            str(data.get("site")),
            str(data.get("device")),
            event.time,
            MappingProxyType(points),
        )


def as_bool(value: Any) -> bool | None:
    """A binary point's value as a bool, or None when it is not one."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("active", "on", "true", "1", "running", "open", "alarm", "fault"):
            return True
        if lowered in ("inactive", "off", "false", "0", "stopped", "closed", "normal", "ok"):
            return False
    return None


class AlertBook:
    """A module's asset alerts (`org.edgegw.asset.failed`), kept in its store: each is raised once while its
    condition holds and cleared once when it ends, across restarts and redelivered events.

    The book is the only writer of its keys (`alert/...`) in the module's store, so it keeps the current
    tenant's active alerts in memory, read from the store once: a module asks "is it active?" for every
    condition of every event, and a store read each time was a thread hop each (most of the building's
    module cost)."""

    PREFIX = "alert/"

    def __init__(self, module: str, store: StateStore, publish: Publish) -> None:
        self._module = module
        self._store = store
        self._publish = publish
        self._log = logging.getLogger(f"edge.module.{module}")
        self._active: dict[str, dict[str, dict[str, Any]]] = {}  # tenant -> alert id -> raised alert

    def alert_id(self, kind: str, site: str, asset: str) -> str:
        return f"{self._module}:{kind}:{site}/{asset}"

    async def active(self) -> dict[str, dict[str, Any]]:
        return dict(await self._tenant_alerts())

    async def is_active(self, alert_id: str) -> bool:
        return alert_id in await self._tenant_alerts()

    async def _tenant_alerts(self) -> dict[str, dict[str, Any]]:
        tenant = current_tenant().tenant_id
        alerts = self._active.get(tenant)
        if alerts is None:
            stored = await self._store.items(self.PREFIX)
            alerts = self._active[tenant] = {key.removeprefix(self.PREFIX): value for key, value in stored}
        return alerts

    async def raise_alert(
        self, *, kind: str, site: str, asset: str, severity: str, cause: str, since: float
    ) -> bool:
        """Publish a raised alert unless it is active already; True when it was raised now."""
        alert_id = self.alert_id(kind, site, asset)
        alerts = await self._tenant_alerts()
        if alert_id in alerts:
            return False
        data = {
            "state": "raised",
            "alert_id": alert_id,
            "site": site,
            "asset": asset,
            "kind": kind,
            "severity": severity,
            "cause": cause,
            "since": rfc3339(since),
        }
        await self._publish(
            ASSET_FAILED, f"{site}/{asset}", data
        )  # before the store: a crash repeats, never loses
        await self._store.put(self.PREFIX + alert_id, data)
        alerts[alert_id] = data  # only once stored: a failed write is tried again next time
        self._log.warning("%s %s/%s raised (%s): %s", kind, site, asset, severity, cause)
        return True

    async def clear_alert(self, *, kind: str, site: str, asset: str, cause: str, since: float) -> bool:
        """Publish a cleared alert if it is active; True when it was cleared now."""
        alert_id = self.alert_id(kind, site, asset)
        alerts = await self._tenant_alerts()
        raised = alerts.get(alert_id)
        if raised is None:
            return False
        data = {**raised, "state": "cleared", "cause": cause, "since": rfc3339(since)}
        await self._publish(ASSET_FAILED, f"{site}/{asset}", data)
        await self._store.delete(self.PREFIX + alert_id)
        alerts.pop(alert_id, None)
        self._log.info("%s %s/%s cleared: %s", kind, site, asset, cause)
        return True


StateHandler = Callable[[StoredEvent, dict[str, Any]], Awaitable[None]]


class EventBatches:
    """A module's events in batches of one tenant, with the state they changed stored in one transaction per
    batch (not one per event: a busy site sends hundreds of events a second, each commit is an fsync).
    A batch lingers up to `max_wait` (0.25 s) for more events: each batch costs a store transaction and its
    thread hop, so the module reacts a quarter second later at most, at a fraction of the per-batch cost.

    `handle(event, changed)` updates the module's state and puts what must be stored into `changed`
    (key -> JSON value). The batch holds the tenant's `lock` throughout, so a periodic check never interleaves.
    The outbox cursor moves only after the batch was stored; after a crash the batch is offered again, so
    handlers must ignore what they have seen (sample times not newer than the last). An event whose handling
    raises is logged with its id and skipped: one malformed event never blocks the tenant's stream."""

    def __init__(
        self,
        context: ModuleContext,
        types: Sequence[str],
        handle: StateHandler,
        lock: Callable[[], asyncio.Lock],
        *,
        name: str = "events",
        max_wait: float = 0.25,
    ) -> None:
        self._context = context
        self._handle = handle
        self._lock = lock
        self._log = logging.getLogger(f"edge.module.{context.name}")
        self.failed = 0
        context.subscribe_batches(types, self._batch, max_batch=500, max_wait=max_wait, name=name)

    async def _batch(self, events: Sequence[StoredEvent]) -> None:
        changed: dict[str, Any] = {}
        async with self._lock():
            for event in events:
                try:
                    await self._handle(event, changed)
                except Exception:
                    self.failed += 1
                    self._log.exception("event %s (%s) could not be handled; skipped", event.id, event.type)
            if changed:
                await self._context.store.apply(changed)
