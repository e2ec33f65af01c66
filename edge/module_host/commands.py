"""Commands for modules (acknowledge an alarm, ...), from MQTT, the CLI or the API, delivered as events.

A request is published on `{prefix}/{tenant}/cmd/module/{module}/{action}` with a JSON object payload,
`{"args": {...}, "id": "req-1"}` (both optional), or submitted with `ModuleCommands.submit` (what
`Gateway.submit_module_command` and a REST API call). The tenant is the topic's (or the caller's); an unknown
tenant, a module that is not running, or one the tenant is not entitled to is refused with a logged reason,
answered on `.../{action}/result` and recorded as an `org.edgegw.module.command.result` event. An accepted
request is appended durably to the outbox as an `org.edgegw.module.command` event (subject `module/<name>`),
which the module receives like any event and answers with a result event of its own (`command_of`,
`result_data`); that result reaches MQTT on `{prefix}/{tenant}/events/module/{module}`.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from edge.bus.base import Bus, InboundMessage
from edge.bus.topics import Topics
from edge.ops.stats import GatewayStats
from edge.outbox import OutboxStore
from edge.sdk.commands import ModuleCommand, result_data
from edge.sdk.errors import EdgeError
from edge.sdk.events import MODULE_COMMAND, MODULE_COMMAND_RESULT, make_event
from edge.sdk.tenancy import TenantContext, tenant_scope

log = logging.getLogger(__name__)

MAX_PAYLOAD = 16 * 1024  # bytes of one module command: arguments, not data transfers
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

# (tenant, module) -> None when the module runs for that tenant, else the reason it does not
ModuleGate = Callable[[str, str], str | None]


class ModuleCommandRejected(EdgeError):
    """A module command was refused before it reached the module; `reason` says why."""

    def __init__(self, tenant: str, module: str, action: str, reason: str) -> None:
        self.tenant, self.module, self.action, self.reason = tenant, module, action, reason
        super().__init__(f"command {module}/{action} for tenant {tenant!r}: {reason}")


class ModuleCommandThrottled(ModuleCommandRejected):
    """Refused because the tenant is over its command rate (edge.ops.quotas): answered on MQTT but, unlike
    other refusals, not stored as a result event, or a flood of commands would become a flood of events."""


def parse_payload(tenant: str, module: str, action: str, payload: bytes) -> ModuleCommand:
    """Validate one inbound request body; raises ModuleCommandRejected with the reason."""

    def reject(reason: str) -> ModuleCommandRejected:
        return ModuleCommandRejected(tenant, module, action, reason)

    if len(payload) > MAX_PAYLOAD:
        raise reject(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    try:
        body = orjson.loads(payload) if payload.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise reject(f"payload is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise reject("payload must be a JSON object")
    unknown = set(body) - {"args", "id"}
    if unknown:
        raise reject(f"unknown fields {sorted(unknown)} (expected 'args' and 'id')")
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise reject("'args' must be a JSON object")
    request_id = body.get("id")
    if request_id is not None and (not isinstance(request_id, str) or not 0 < len(request_id) <= 128):
        raise reject("'id' must be a string of 1..128 characters")
    return ModuleCommand(tenant, module, action, args, request_id or uuid.uuid4().hex)


class ModuleCommands:
    """Turns module command requests into durable command events, or refuses them with a reason."""

    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        tenants: Mapping[str, TenantContext],
        outbox: OutboxStore,
        gate: ModuleGate,
        stats: GatewayStats,
        gateway_id: str,
        limit: ModuleGate | None = None,
    ) -> None:
        self._bus = bus
        self._topics = topics
        self._tenants = tenants
        self._outbox = outbox
        self._gate = gate
        self._limit = limit  # the tenant's command rate (edge.ops.quotas): the reason when it is over it
        self._stats = stats
        self._source = f"/{gateway_id}/commands"
        bus.subscribe(topics.module_command_filter(), qos=1, retain_as_published=True)  # retained: refused

    async def submit(
        self,
        tenant: str,
        module: str,
        action: str,
        args: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> str:
        """Queue a command for `module` on behalf of `tenant`; returns its request id once it is durable.
        Raises ModuleCommandRejected when the tenant, module or action is refused."""
        try:
            payload = orjson.dumps({"args": dict(args or {}), **({"id": request_id} if request_id else {})})
        except TypeError as exc:  # e.g. an integer beyond 64 bits, which the command's JSON cannot carry
            raise ModuleCommandRejected(tenant, module, action, f"'args' cannot be sent: {exc}") from None
        command = parse_payload(tenant, module, action, payload)
        return await self._enqueue(command)

    async def accept(self, message: InboundMessage) -> None:
        """An MQTT request: queue it, or refuse it with a logged reason answered on the result topic."""
        target = self._topics.parse_module_command(message.topic)
        if target is None:
            return
        tenant, module, action = target
        try:
            await self._enqueue(parse_payload(tenant, module, action, message.payload))
        except ModuleCommandRejected as exc:
            self._stats.commands_rejected += 1
            if not isinstance(
                exc, ModuleCommandThrottled
            ):  # throttling is logged by the limits, once a minute
                log.warning("module command on %s rejected: %s", message.topic, exc.reason)
            if tenant in self._tenants:  # answer only tenants this gateway serves
                request_id = _request_id(message.payload)
                command = ModuleCommand(tenant, module, action, {}, request_id)
                await self._refuse(command, exc.reason, stored=not isinstance(exc, ModuleCommandThrottled))

    async def _enqueue(self, command: ModuleCommand) -> str:
        def reject(reason: str) -> ModuleCommandRejected:
            return ModuleCommandRejected(command.tenant, command.module, command.action, reason)

        context = self._tenants.get(command.tenant)
        if context is None:
            raise reject("unknown tenant")
        if not _NAME.match(command.module) or not _NAME.match(command.action):
            raise reject("module and action must be names (letters, digits, '_', '.', '-')")
        refusal = self._gate(command.tenant, command.module)
        if refusal is not None:
            raise reject(refusal)
        throttled = self._limit(command.tenant, command.module) if self._limit is not None else None
        if throttled is not None:
            raise ModuleCommandThrottled(command.tenant, command.module, command.action, throttled)
        data = {
            "module": command.module,
            "action": command.action,
            "args": command.args,
            "request_id": command.request_id,
        }
        event = make_event(
            type=MODULE_COMMAND,
            source=self._source,
            subject=f"module/{command.module}",
            tenant=command.tenant,
            time=time.time(),
            data=data,
        )
        with tenant_scope(context):
            await self._outbox.append_durable(event)
        self._stats.commands_accepted += 1
        log.info(
            "module command %s/%s queued for %s (%s)",
            command.module,
            command.action,
            command.tenant,
            command.request_id,
        )
        return command.request_id

    async def _refuse(self, command: ModuleCommand, reason: str, *, stored: bool = True) -> None:
        data = result_data(command, ok=False, reason=reason)
        topic = self._topics.module_command_result(command.tenant, command.module, command.action)
        future = await self._bus.publish(topic, orjson.dumps(data), qos=1)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        if not stored:
            return
        event = make_event(
            type=MODULE_COMMAND_RESULT,
            source=self._source,
            subject=f"module/{command.module}",
            tenant=command.tenant,
            time=time.time(),
            data=data,
        )
        with tenant_scope(self._tenants[command.tenant]):
            await self._outbox.append(event)


def _request_id(payload: bytes) -> str:
    """The request's id, if a refused payload has a readable one (so the sender can match the answer)."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    value = body.get("id") if isinstance(body, dict) else None
    return value if isinstance(value, str) else ""
