"""Cluster mode: a write for a device another instance polls, sent to its owner over the bus.

The REST API, the console and in-process modules write through one instance; the device may be polled by
another (its lease holder). Instead of refusing the write as unknown, the instance publishes it as the write
request an MQTT client would send (`{prefix}/{tenant}/cmd/{site}/{device}/{point}/set`, `{"value", "id",
"priority"}`): every instance receives it, the owner alone executes it (`CommandHandler.polled_elsewhere`)
and answers on the `.../result` topic, with the result event in the outbox as for any request. The sending
instance waits for that answer, matched by topic and request id, for a bounded time: the owner's own
device timeout plus a margin. No answer by then (the device moving between owners, no live owner) is a
`timeout` outcome naming the device, never a silent success; a late answer is dropped with a log line.

The answers are trusted because only gateways may publish on `.../result` (docs/mqtt-access.md; on NATS the
tenants' accounts export only write requests and module commands to the gateway's).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Literal

import orjson

from edge.bus.base import Bus, InboundMessage
from edge.bus.topics import Topics

if TYPE_CHECKING:
    from edge.devices.commands import WriteOutcome, WriteRequest

__all__ = ["WriteForwarder"]

log = logging.getLogger(__name__)


class WriteForwarder:
    """Sends writes to the owning instance and waits for its answer (at most `timeout` seconds each)."""

    def __init__(self, bus: Bus, topics: Topics, timeout: float) -> None:
        self._bus = bus
        self._topics = topics
        self.timeout = timeout
        self._awaiting: dict[tuple[str, str], asyncio.Future[dict[str, object]]] = {}
        bus.subscribe(topics.command_result_filter(), qos=1)

    async def write(self, request: WriteRequest) -> WriteOutcome:
        from edge.devices.commands import WriteOutcome  # commands.py imports this module

        # unique per forwarded write (the caller's id, if any, then `~` and 12 hex digits): the owner echoes
        # it in its answer, which tells two waiting writes apart, also of several instances
        request_id = f"{request.request_id or 'write'}~{uuid.uuid4().hex[:12]}"
        topic = self._topics.command_result(request.tenant, request.site, request.device, request.point)
        key = (topic, request_id)
        answer: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._awaiting[key] = answer
        body: dict[str, object] = {"value": request.value, "id": request_id}
        if request.priority is not None:
            body["priority"] = request.priority
        target = f"{request.site}/{request.device}.{request.point}"
        try:
            async with asyncio.timeout(self.timeout):
                sent = await self._bus.publish(
                    self._topics.command(request.tenant, request.site, request.device, request.point),
                    orjson.dumps(body),
                    qos=1,
                )
                await sent
                result = await answer
        except TimeoutError:
            reason = (
                f"no instance answered the write to {target} within {self.timeout:g} s "
                "(its owner may be moving to another instance; try again)"
            )
            log.warning("forwarded write %s: %s", request_id, reason)
            return WriteOutcome(False, reason, "timeout")
        finally:
            self._awaiting.pop(key, None)
        return _outcome(result)

    def take(self, message: InboundMessage) -> bool:
        """Whether `message` is a write result (ours or another instance's); hands ours to its waiting write."""
        if self._topics.parse_command_result(message.topic) is None:
            return False
        try:
            result = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            return True  # not a gateway's answer: nothing waits for it
        request_id = result.get("request_id") if isinstance(result, dict) else None
        waiting = self._awaiting.get((message.topic, request_id)) if isinstance(request_id, str) else None
        if waiting is not None and not waiting.done():
            waiting.set_result(result)
        return True


def _outcome(result: dict[str, object]) -> WriteOutcome:
    """The owner's answer as this instance's outcome: its reason (with ok, the device's note), and why it
    failed (`failure`, else refused)."""
    from edge.devices.commands import WriteOutcome

    reason = result.get("reason")
    if result.get("ok") is True:
        return WriteOutcome(True, str(reason) if reason is not None else None)
    failure = result.get("failure")
    kind: Literal["refused", "unreachable", "timeout"] = (
        failure if failure == "unreachable" or failure == "timeout" else "refused"
    )
    return WriteOutcome(False, str(reason) if reason is not None else "write failed", kind)
