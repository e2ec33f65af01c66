"""Commands from the platform, executed through the same path and checks as MQTT `/set` and the REST API.

A point write becomes the `WriteRequest` an MQTT request would (value and priority checked by the same
parsers), handed to `CommandHandler.write`: the point's range, the device's one conversation at a time, the
write timeout, the result topic and `org.edgegw.command.result` event. A module command goes to
`ModuleCommands.submit` (tenant entitled, module running). Each returns the `Outcome` the downlink reports.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from edge.devices.commands import (
    CommandRejected,
    WriteOutcome,
    WriteRequest,
    parse_write_payload,
    parse_write_priority,
)
from edge.module_host.commands import ModuleCommandRejected
from edge.sdk.errors import UnknownTarget

__all__ = ["CommandServices", "Outcome", "execute"]


@dataclass(frozen=True)
class Outcome:
    status: str  # CloudResultData.status
    reason: str | None = None
    target: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("done", "accepted")


@dataclass(frozen=True)
class CommandServices:
    write: Callable[[WriteRequest], Awaitable[WriteOutcome]]  # CommandHandler.write
    # ModuleCommands.submit: (tenant, module, action, args, request id) -> request id
    submit_module_command: Callable[[str, str, str, dict[str, Any], str], Awaitable[str]]


async def execute(services: CommandServices, tenant: str, claims: dict[str, Any]) -> Outcome:
    if claims["kind"] == "point.write":
        return await _write(services, tenant, claims)
    return await _module_command(services, tenant, claims)


async def _write(services: CommandServices, tenant: str, claims: dict[str, Any]) -> Outcome:
    site, device, point = (claims.get(k) for k in ("site", "device", "point"))
    if not all(isinstance(x, str) and x for x in (site, device, point)):
        return Outcome("refused", "a point write names 'site', 'device' and 'point' (strings)")
    target = f"{site}/{device}.{point}"
    if "value" not in claims:
        return Outcome("refused", "a point write carries a 'value' (null releases the point)", target)
    # the stdlib writes a NaN or Infinity of the claims as such (orjson would make it null: a release), so the
    # command path refuses it naming the point's range
    body = json.dumps({"value": claims["value"], "priority": claims.get("priority")}).encode()
    try:
        value, _ = parse_write_payload(body, finite_only=False)
        priority = parse_write_priority(body)
    except CommandRejected as exc:
        return Outcome("refused", str(exc), target)
    request = WriteRequest(
        tenant, str(site), str(device), str(point), value, f"cloud:{claims['jti']}", priority
    )
    try:
        outcome = await services.write(request)
    except UnknownTarget as exc:
        return Outcome("refused", str(exc), target)
    if outcome.ok:
        return Outcome("done", outcome.reason, target, {"value": value})  # reason: the device's note, if any
    return Outcome(
        "unreachable" if outcome.failure == "unreachable" else outcome.failure or "failed",
        outcome.reason,
        target,
    )


async def _module_command(services: CommandServices, tenant: str, claims: dict[str, Any]) -> Outcome:
    module, action, args = claims.get("module"), claims.get("action"), claims.get("args", {})
    if not isinstance(module, str) or not isinstance(action, str):
        return Outcome("refused", "a module command names 'module' and 'action' (strings)")
    target = f"{module}/{action}"
    if not isinstance(args, dict):
        return Outcome("refused", "'args' must be a JSON object", target)
    try:
        request_id = await services.submit_module_command(tenant, module, action, args, claims["jti"])
    except ModuleCommandRejected as exc:
        return Outcome("refused", exc.reason, target)
    return Outcome("accepted", None, target, {"request_id": request_id})
