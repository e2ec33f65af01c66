"""Write requests from local systems, over MQTT.

A request is published on `{prefix}/{tenant}/cmd/{site}/{device}/{point}/set` with a JSON payload: either
`{"value": 42, "id": "req-1"}` (optionally `"priority": 1..16`, a BACnet write priority instead of the
point's own) or a bare JSON value. Anything malformed, too large, for an unknown target
or a read-only point is refused with a logged reason, counted, and answered on the `.../result` topic; the
gateway carries on. Every outcome is also an `org.edgegw.command.result` event in the outbox.

MQTT 5 request/response: a request with a Response Topic (in the tenant's `{prefix}/{tenant}/reply/` branch)
is answered there too, with its Correlation Data. A retained request (module commands too) is never executed:
it would run again on every reconnect and reach every new subscriber. It is cleared (an empty retained
message on its topic) with a logged reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson

from edge.bus.base import Bus, InboundMessage, MessageProperties
from edge.bus.topics import Topics
from edge.config.suggest import listing
from edge.devices.forward import WriteForwarder
from edge.devices.polling import DevicePoller
from edge.module_host.commands import ModuleCommands
from edge.ops.stats import GatewayStats
from edge.outbox import OutboxStore
from edge.sdk.errors import DeviceError, DeviceUnreachable, UnknownTarget, WriteRejected
from edge.sdk.events import COMMAND_RESULT, make_event
from edge.sdk.points import Scalar
from edge.sdk.tenancy import TenantContext, tenant_scope

log = logging.getLogger(__name__)

WRITE_TIMEOUT = 10.0


class CommandRejected(Exception):
    pass


@dataclass(frozen=True, slots=True)
class WriteRequest:
    tenant: str
    site: str
    device: str
    point: str
    value: Scalar | None  # None releases the point (BACnet relinquish)
    request_id: str | None
    priority: int | None = None  # BACnet write priority 1..16 for this write; None: the point's own
    response_topic: str | None = None  # MQTT 5: also answer here (checked against the tenant's reply/ branch)
    correlation_data: bytes | None = None


def parse_write_request(topics: Topics, topic: str, payload: bytes) -> WriteRequest:
    """Validate one inbound message; raises CommandRejected with the reason.

    A NaN or Infinity (which JSON lacks, but Python's json module writes) is kept, so `check_write_value`
    refuses it naming what the point accepts."""
    target = topics.parse_command(topic)
    if target is None:
        raise CommandRejected(f"not a command topic: {topic!r}")
    value, request_id = parse_write_payload(payload, finite_only=False)
    return WriteRequest(*target, value=value, request_id=request_id, priority=parse_write_priority(payload))


def parse_write_priority(payload: bytes) -> int | None:
    """The optional `"priority"` of a JSON-object request body (already checked by `parse_write_payload`)."""
    body = json.loads(payload)  # the stdlib parser: a NaN value is refused later, with the point's range
    priority = body.get("priority") if isinstance(body, dict) else None
    if priority is None:
        return None
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 16:
        raise CommandRejected(f"'priority' must be an integer 1..16, not {priority!r}")
    return priority


def parse_write_payload(payload: bytes, *, finite_only: bool = True) -> tuple[Scalar | None, str | None]:
    """(value, request id) of a write request body, whatever face it came through; raises CommandRejected.

    `finite_only`: refuse NaN and ±Infinity here (else they are returned, for `check_write_value`)."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        body = _non_finite_json(payload)
        if body is None:
            raise CommandRejected(f"payload is not JSON: {exc}") from None
        if finite_only:
            raise CommandRejected(f"{_shown(body)} (JSON has no NaN or Infinity)") from None
    request_id = None
    if isinstance(body, dict):
        if "value" not in body:
            raise CommandRejected("JSON object without a 'value' field")
        request_id = body.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise CommandRejected("'id' must be a string")
        body = body["value"]
    if body is not None and not isinstance(body, bool | int | float | str):
        raise CommandRejected(f"value must be a number, boolean, string or null, not {type(body).__name__}")
    return body, request_id


def _non_finite_json(payload: bytes) -> Any:
    """The body when `payload` is JSON but for a value of NaN, ±Infinity or beyond a double (orjson refuses
    them; Python's json module reads and writes them), else None."""
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    value = body.get("value") if isinstance(body, dict) else body
    return body if isinstance(value, float) and not math.isfinite(value) else None


def _shown(body: Any) -> str:
    value = body.get("value") if isinstance(body, dict) else body
    return f"{json.dumps(value)} is not a finite number"


def check_write_value(poller: DevicePoller, point_name: str, value: Scalar | None) -> None:
    """Refuse, before the device sees it, what the point cannot take: an unknown point (naming the device's
    points), a number that is not finite, or one outside what the point's data type holds through its scaling
    (`DevicePoller.accepted_range`). Raises WriteRejected saying what the point accepts."""
    device = poller.spec.name
    point = next((p for p in poller.spec.points if p.name == point_name), None)
    if point is None:
        points = listing(point_name, (p.name for p in poller.spec.points))
        raise WriteRejected(device, f"no such point (points of {device}: {points})", point=point_name)
    if value is None or isinstance(value, bool | str):
        return  # a release, or a state or text the driver checks against the point
    accepted = poller.accepted_range(point_name)
    accepts = f"{point_name} accepts {_range_text(accepted, point.unit)}" if accepted else ""
    shown = json.dumps(value)  # NaN, Infinity, 1e+40: as the user wrote it
    if isinstance(value, float) and not math.isfinite(value):
        raise WriteRejected(
            device, f"{shown} is not a finite number: {accepts or 'a point takes finite numbers'}", point_name
        )
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any double
        number = math.inf if value > 0 else -math.inf
    if accepted is not None:
        low, high = accepted
        slack = 1e-9 * max(1.0, abs(low), abs(high))  # the bounds are products in floats (32767 * 0.1)
        if not low - slack <= number <= high + slack:
            raise WriteRejected(device, f"{shown} is out of range: {accepts}", point_name)
    elif point.scale and not math.isfinite((number - point.offset) / point.scale):
        raise WriteRejected(device, f"{shown} is too large for the point", point_name)


def _range_text(accepted: tuple[float, float], unit: str | None) -> str:
    return f"{_number(accepted[0])}..{_number(accepted[1])}" + (f" {unit}" if unit else "")


def _number(x: float) -> str:
    """-3276.8, 65535, 3.402823466e+38: ten significant digits, without the float noise of 32767 * 0.1."""
    nearest = round(x)
    if abs(x) < 1e15 and abs(x - nearest) <= 1e-9 * max(1.0, abs(x)):
        return str(nearest)
    return f"{x:.10g}"


def _response_properties(correlation: bytes | None) -> MessageProperties:
    return MessageProperties(content_type="application/json", correlation_data=correlation)


Failure = Literal["refused", "unreachable", "timeout"]


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    ok: bool
    reason: str | None  # why not ok; with ok, the device's note (it took the write with a remark), if any
    failure: Failure | None = None  # why not ok


class CommandHandler:
    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        pollers: Mapping[tuple[str, str, str], DevicePoller],
        tenants: Mapping[str, TenantContext],
        outbox: OutboxStore,
        stats: GatewayStats,
        gateway_id: str,
        module_commands: ModuleCommands | None = None,
    ) -> None:
        self._bus = bus
        self._module_commands = module_commands
        self._topics = topics
        self._pollers = pollers
        self._tenants = tenants
        self._outbox = outbox
        self._stats = stats
        self._source = f"/{gateway_id}/commands"
        self._running: set[asyncio.Task[Any]] = set()
        # cluster mode: a configured device another instance polls; that instance answers its commands
        self.polled_elsewhere: Callable[[tuple[str, str, str]], bool] = lambda key: False
        # cluster mode: a module command is taken by its tenant's leader only, so it is queued once
        self.leads: Callable[[str], bool] = lambda tenant: True
        # cluster mode: writes through this instance (API, modules) for a device polled elsewhere go to its owner
        self.forwarder: WriteForwarder | None = None
        # retain as published: a retained request shows its flag also when it arrives live, so it is refused
        bus.subscribe(topics.command_filter(), qos=1, retain_as_published=True)

    async def run(self) -> None:
        async for message in self._bus.messages():
            self._accept(message)

    def _accept(self, message: InboundMessage) -> None:
        if self.forwarder is not None and self.forwarder.take(message):
            return
        if message.retain:
            self._refuse_retained(message)
            return
        module_command = self._topics.parse_module_command(message.topic)
        if self._module_commands is not None and module_command:
            if not self.leads(module_command[0]):
                return
            task = asyncio.create_task(self._module_commands.accept(message))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            return
        try:
            request = parse_write_request(self._topics, message.topic, message.payload)
            if message.response_topic is not None:
                if not self._topics.reply_allowed(request.tenant, message.response_topic):
                    raise CommandRejected(
                        f"response topic {message.response_topic[:200]!r} is outside "
                        f"{self._topics.prefix}/{request.tenant}/reply/"
                    )
                request = replace(
                    request,
                    response_topic=message.response_topic,
                    correlation_data=message.correlation_data,
                )
            key = (request.tenant, request.site, request.device)
            poller = self._pollers.get(key)
            if poller is None and self.polled_elsewhere(key):
                return
            if poller is None:
                raise UnknownTarget(
                    f"unknown device {request.site}/{request.device} for tenant {request.tenant!r}"
                )
        except (CommandRejected, UnknownTarget) as exc:
            self._stats.commands_rejected += 1
            log.warning("command on %s rejected: %s", message.topic, exc)
            target = self._topics.parse_command(message.topic)
            if target is not None and target[0] in self._tenants:  # answer only tenants this gateway serves
                reply_to = message.response_topic
                allowed = reply_to is not None and self._topics.reply_allowed(target[0], reply_to)
                refusal = WriteRequest(
                    *target,
                    value=None,
                    request_id=None,
                    response_topic=reply_to if allowed else None,
                    correlation_data=message.correlation_data,
                )
                self._spawn(self._reply(refusal, ok=False, reason=str(exc)))
            return
        self._spawn(self._execute(poller, request))

    def _refuse_retained(self, message: InboundMessage) -> None:
        """Never execute a retained command; clear it so the broker stops handing it out."""
        if not message.payload:
            return  # the empty message that clears one (ours, or the sender's own)
        self._stats.commands_rejected += 1
        log.warning(
            "retained command on %s ignored and cleared: a retained request would run again on every reconnect"
            " (publish commands without the retain flag)",
            message.topic,
        )
        self._spawn(self._clear(message.topic))

    async def _clear(self, topic: str) -> None:
        future = await self._bus.publish(topic, b"", qos=1, retain=True)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def write(self, request: WriteRequest) -> WriteOutcome:
        """One write from another face (the REST API): the MQTT path's checks, result topic and event. In
        cluster mode a device another instance polls gets the write through its owner (`WriteForwarder`).

        Raises UnknownTarget for a device the tenant does not have (nothing is recorded, as over MQTT)."""
        key = (request.tenant, request.site, request.device)
        poller = self._pollers.get(key)
        if poller is None and self.forwarder is not None and self.polled_elsewhere(key):
            return await self.forwarder.write(request)
        if poller is None:
            self._stats.commands_rejected += 1
            raise UnknownTarget(
                f"unknown device {request.site}/{request.device} for tenant {request.tenant!r}"
            )
        return await self._execute(poller, request)

    async def _execute(self, poller: DevicePoller, request: WriteRequest) -> WriteOutcome:
        with tenant_scope(poller.tenant):
            try:
                async with asyncio.timeout(WRITE_TIMEOUT):
                    check_write_value(poller, request.point, request.value)
                    note = await poller.write(request.point, request.value, priority=request.priority)
            except (DeviceError, TimeoutError) as exc:
                reason = exc.reason if isinstance(exc, DeviceError) else f"no answer within {WRITE_TIMEOUT}s"
                self._stats.commands_rejected += 1
                log.warning("write %s/%s.%s failed: %s", request.site, request.device, request.point, reason)
                failure: Failure = (
                    "timeout"
                    if isinstance(exc, TimeoutError)
                    else "unreachable"
                    if isinstance(exc, DeviceUnreachable)
                    else "refused"
                )
                await self._reply(request, ok=False, reason=reason, failure=failure)
                return WriteOutcome(False, reason, failure)
            self._stats.commands_accepted += 1
            log.info("wrote %s to %s/%s.%s", request.value, request.site, request.device, request.point)
            await self._reply(request, ok=True, reason=note)  # with ok, the reason is the device's note
            return WriteOutcome(True, note)

    async def write_for_module(
        self, module: str, tenant: str, site: str, device: str, point: str, value: Scalar | None
    ) -> None:
        """A module's write (an HVAC schedule): the same checks, timeout and result event as an MQTT
        request, answered by raising DeviceError/UnknownTarget with the reason instead of on a topic."""
        poller = self._pollers.get((tenant, site, device))
        request = WriteRequest(tenant, site, device, point, value, f"module:{module}")
        if poller is None and self.forwarder is not None and self.polled_elsewhere((tenant, site, device)):
            outcome = await self.forwarder.write(
                request
            )  # the module runs on the leader, the device elsewhere
        elif poller is None:
            raise UnknownTarget(f"unknown device {site}/{device} for tenant {tenant!r}")
        else:
            outcome = await self._execute(poller, request)
        if not outcome.ok:
            raise DeviceError(device, outcome.reason or "write failed", point)

    async def _reply(
        self, request: WriteRequest, *, ok: bool, reason: str | None, failure: Failure | None = None
    ) -> None:
        with tenant_scope(self._tenants[request.tenant]):
            await self._record(request, ok=ok, reason=reason, failure=failure)

    async def _record(
        self, request: WriteRequest, *, ok: bool, reason: str | None, failure: Failure | None
    ) -> None:
        data = {
            "device": request.device,
            "site": request.site,
            "point": request.point,
            "value": request.value,
            "ok": ok,
            "reason": reason,
            "request_id": request.request_id,
        }
        topic = self._topics.command_result(request.tenant, request.site, request.device, request.point)
        # on the bus only, why a write failed: the instance that forwarded it answers its caller with that
        body = orjson.dumps(data if failure is None else {**data, "failure": failure})
        future = await self._bus.publish(topic, body, qos=1)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        if request.response_topic is not None:
            answer = await self._bus.publish(
                request.response_topic, body, qos=1, properties=_response_properties(request.correlation_data)
            )
            answer.add_done_callback(lambda f: f.cancelled() or f.exception())
        event = make_event(
            type=COMMAND_RESULT,
            source=self._source,
            subject=f"{request.site}/{request.device}",
            tenant=request.tenant,
            time=time.time(),
            data=data,
        )
        await self._outbox.append(event)
