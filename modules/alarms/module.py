"""The alarms module: threshold rules on any point, raised, cleared and acknowledged as `org.edgegw.alarm`.

Per tenant, the module remembers each watched point (`track/<rule>/<site>/<device>`, see `rules.Track`) and
each alarm not yet resolved (`alarm/<alarm id>`: active, or cleared but not acknowledged) in its store, so a
restart neither forgets an active alarm nor raises it twice. Tracks are stored once per batch of events
(`EventBatches`); alarms as they change. Samples are evaluated as they arrive; a tick (`context.every`)
evaluates the time-based parts (delay, stale data, bad quality for too long) every `check_interval`.

Commands (`org.edgegw.module.command` for module "alarms"): `ack` with args `{"alarm_id": ..., "by": ...,
"note": ...}` acknowledges an alarm; `list` returns the unresolved alarms.
"""

from __future__ import annotations

import asyncio
import logging
from fnmatch import fnmatchcase
from typing import Any

from edge.sdk import (
    MODULE_COMMAND,
    MODULE_COMMAND_RESULT,
    TELEMETRY,
    EventBatches,
    Health,
    ModuleCommand,
    ModuleContext,
    StoredEvent,
    Telemetry,
    command_of,
    current_tenant,
    parse_config,
    result_data,
    rfc3339,
)
from modules.alarms.config import AlarmsConfig, Rule
from modules.alarms.events import ALARM
from modules.alarms.rules import Track, Transition, evaluate, observe

log = logging.getLogger("edge.module.alarms")

LIST_LIMIT = 200  # alarms in one `list` answer


class Alarms:
    config_model = AlarmsConfig  # checked by the config loader too: errors name file and field

    def __init__(self) -> None:
        self._tracks: dict[str, dict[str, Track]] = {}  # tenant -> key -> track (cache of the store)
        self._locks: dict[str, asyncio.Lock] = {}
        self._raised = 0

    async def on_init(self, context: ModuleContext) -> None:
        self._context = context
        self._config = parse_config(AlarmsConfig, context.config, context.name)
        self._rules = {rule.id: rule for rule in self._config.rules}
        self._batches = EventBatches(context, [TELEMETRY, MODULE_COMMAND], self._handle, self._lock)
        context.every(self._config.check_interval, self._tick)  # per entitled tenant, in its context

    async def on_enable(self) -> None:
        return None  # the kernel starts its subscriptions and ticks

    async def on_disable(self) -> None:
        return None  # the kernel cancels them

    async def on_health_check(self) -> Health:
        return Health(True, f"{len(self._rules)} rules, {self._raised} alarms raised since start")

    # ---- events ------------------------------------------------------------------------------------------

    async def _handle(self, event: StoredEvent, changed: dict[str, Any]) -> None:
        command = command_of(event, self._context.name)
        if command is not None:
            await self._command(command)
            return
        telemetry = Telemetry.from_event(event)
        if telemetry is None:
            return
        tracks = await self._tenant_tracks()
        for rule in self._rules.values():
            sample = telemetry.points.get(rule.point)
            if sample is None or not _matches(rule, telemetry.site, telemetry.device):
                continue
            key = f"track/{rule.id}/{telemetry.site}/{telemetry.device}"
            track = tracks.setdefault(key, Track())
            observe(track, sample.value, sample.quality, telemetry.time)
            for transition in evaluate(rule, track, telemetry.time):
                await self._publish(rule, telemetry.site, telemetry.device, transition)
            changed[key] = track.to_json()

    async def _tick(self, now: float) -> None:
        async with self._lock():
            tracks = await self._tenant_tracks()
            changed: dict[str, Any] = {}
            for key, track in tracks.items():
                _, rule_id, site, device = key.split("/", 3)
                rule = self._rules.get(rule_id)
                if rule is None:  # a rule removed from the configuration
                    continue
                for transition in evaluate(rule, track, now):
                    await self._publish(rule, site, device, transition)
                    changed[key] = track.to_json()
            if changed:
                await self._context.store.apply(changed)

    async def _tenant_tracks(self) -> dict[str, Track]:
        tenant = current_tenant().tenant_id
        if tenant not in self._tracks:
            stored = await self._context.store.items("track/")
            self._tracks[tenant] = {key: Track.from_json(value) for key, value in stored}
        return self._tracks[tenant]

    def _lock(self) -> asyncio.Lock:
        return self._locks.setdefault(current_tenant().tenant_id, asyncio.Lock())

    # ---- alarms ------------------------------------------------------------------------------------------

    async def _publish(self, rule: Rule, site: str, device: str, transition: Transition) -> None:
        alarm_id = f"{rule.id}:{site}/{device}:{transition.condition}"
        key = f"alarm/{alarm_id}"
        previous = await self._context.store.get(key)
        data = {
            "state": transition.state,
            "alarm_id": alarm_id,
            "rule": rule.id,
            "site": site,
            "device": device,
            "point": rule.point,
            "condition": transition.condition,
            "severity": rule.severity,
            "value": transition.value,
            "limit": transition.limit,
            "message": rule.message,
            "since": rfc3339(transition.at),
            "acknowledged": False,
            "acknowledged_by": None,
            "note": None,
        }
        if transition.state == "cleared" and previous is not None:
            data.update({k: previous[k] for k in ("acknowledged", "acknowledged_by", "note")})
        await self._context.publish(ALARM, f"{site}/{device}", data)
        if transition.state == "raised":
            self._raised += 1
            log.warning(
                "alarm %s raised (%s): value %s, limit %s",
                alarm_id,
                rule.severity,
                data["value"],
                data["limit"],
            )
            await self._context.store.put(key, data)
        elif data["acknowledged"]:
            await self._context.store.delete(key)  # cleared and acknowledged: resolved
        else:
            await self._context.store.put(key, data)  # cleared, waiting for acknowledgement

    async def _command(self, command: ModuleCommand) -> None:
        if command.action == "list":
            alarms = [value for _, value in await self._context.store.items("alarm/")]
            # one answer stays well inside an MQTT payload; more than this many unresolved alarms is a flood
            result = {
                "alarms": alarms[:LIST_LIMIT],
                "total": len(alarms),
                "truncated": len(alarms) > LIST_LIMIT,
            }
            await self._answer(command, ok=True, result=result)
            return
        if command.action != "ack":
            await self._answer(command, ok=False, reason=f"unknown action {command.action!r} (ack, list)")
            return
        alarm_id = command.args.get("alarm_id")
        if not isinstance(alarm_id, str):
            await self._answer(command, ok=False, reason="args.alarm_id (a string) is required")
            return
        key = f"alarm/{alarm_id}"
        alarm = await self._context.store.get(key)
        if alarm is None:
            await self._answer(command, ok=False, reason=f"no unresolved alarm {alarm_id!r}")
            return
        if alarm["acknowledged"]:
            await self._answer(command, ok=True, result=alarm)  # acknowledging twice is harmless
            return
        by, note = command.args.get("by"), command.args.get("note")
        acked = {
            **alarm,
            "acknowledged": True,
            "acknowledged_by": str(by) if by is not None else None,
            "note": str(note)[:500] if note is not None else None,
        }
        await self._context.publish(
            ALARM, f"{alarm['site']}/{alarm['device']}", {**acked, "state": "acknowledged"}
        )
        if alarm["state"] == "cleared":
            await self._context.store.delete(key)
        else:
            await self._context.store.put(key, acked)
        log.info("alarm %s acknowledged by %s", alarm_id, acked["acknowledged_by"] or "-")
        await self._answer(command, ok=True, result=acked)

    async def _answer(
        self,
        command: ModuleCommand,
        *,
        ok: bool,
        reason: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        data = result_data(command, ok=ok, reason=reason, result=result)
        await self._context.publish(MODULE_COMMAND_RESULT, f"module/{self._context.name}", data)


def _matches(rule: Rule, site: str, device: str) -> bool:
    return fnmatchcase(device, rule.devices) and fnmatchcase(site, rule.sites)
