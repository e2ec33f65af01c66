"""Module commands as a module receives them: the command in a delivered event, and the data of its answer.

A request (`{prefix}/{tenant}/cmd/module/{module}/{action}` on MQTT, `edge module command`, the API) reaches the
module as an `org.edgegw.module.command` event; the module answers with an `org.edgegw.module.command.result`
event whose data is `result_data(...)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from edge.sdk.events import MODULE_COMMAND, StoredEvent

__all__ = ["ModuleCommand", "command_of", "result_data"]


@dataclass(frozen=True, slots=True)
class ModuleCommand:
    tenant: str
    module: str
    action: str
    args: dict[str, Any]
    request_id: str


def command_of(event: StoredEvent, module: str) -> ModuleCommand | None:
    """The command in a delivered `org.edgegw.module.command` event, if it is addressed to `module`."""
    if event.type != MODULE_COMMAND:
        return None
    data = orjson.loads(event.body).get("data") or {}
    if data.get("module") != module:
        return None
    return ModuleCommand(
        event.tenant,
        module,
        str(data.get("action")),
        dict(data.get("args") or {}),
        str(data.get("request_id")),
    )


def result_data(
    command: ModuleCommand, *, ok: bool, reason: str | None = None, result: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The data of the `org.edgegw.module.command.result` event that answers `command`."""
    return {
        "module": command.module,
        "action": command.action,
        "request_id": command.request_id,
        "ok": ok,
        "reason": reason,
        "result": dict(result or {}),
    }
