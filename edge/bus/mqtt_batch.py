"""Many QoS 0 PUBLISH packets built in one go, for `MqttBus.publish_batch`.

paho builds each message through `publish()`: an `MQTTMessageInfo` with its own `threading.Condition`, a
packet, a queue entry, one `send()` and, once written, an `on_publish` callback with a fresh `ReasonCode` and
`Properties` — ~25 µs a message on this machine, which made retained per-point topics two thirds of the
gateway's CPU at 1 s polls. A QoS 0 message needs none of that state (no packet id, no acknowledgement), so a
batch is encoded here as the bytes of its PUBLISH packets one after the other (MQTT 5, section 3.3) and handed
to paho as one outgoing packet: one `send()`, one completion. The broker sees the same packets either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = ["PublishEncoder"]

_PUBLISH: Final = 0x30
_MAX_REMAINING: Final = 268_435_455  # the largest Remaining Length a varint of 4 bytes holds
_MAX_CACHED_TOPICS: Final = (
    65_536  # bounded: topics come from the configured points, but never grow unchecked
)


def _remaining_length(value: int) -> bytes:
    """MQTT's Variable Byte Integer (section 1.5.5)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class PublishEncoder:
    """Encodes QoS 0 PUBLISH packets with no properties; each topic's part is encoded once and kept."""

    def __init__(self) -> None:
        self._topics: dict[str, bytes] = {}  # topic -> its length, UTF-8 bytes and the empty property list

    def topic_part(self, topic: str) -> bytes:
        """The topic name and the (empty) property list of a PUBLISH; ValueError names an invalid topic."""
        part = self._topics.get(topic)
        if part is None:
            encoded = topic.encode()
            if not encoded or len(encoded) > 65_535 or "+" in topic or "#" in topic or "\x00" in topic:
                raise ValueError(f"invalid publish topic {topic!r}")
            if len(self._topics) >= _MAX_CACHED_TOPICS:
                self._topics.clear()
            part = len(encoded).to_bytes(2, "big") + encoded + b"\x00"
            self._topics[topic] = part
        return part

    def encode(self, messages: Sequence[tuple[str, bytes]], retain: bool) -> bytearray:
        """The packets of `messages` (topic, payload), in order, as one buffer."""
        first = _PUBLISH | (1 if retain else 0)
        out = bytearray()
        topics = self._topics
        for topic, payload in messages:
            part = topics.get(topic) or self.topic_part(topic)
            remaining = len(part) + len(payload)
            if remaining < 128:
                out += bytes((first, remaining))
            elif (
                remaining < 16_384
            ):  # a point's value: two bytes of length (written inline, ~15 % of the time)
                out += bytes((first, (remaining & 0x7F) | 0x80, remaining >> 7))
            elif remaining <= _MAX_REMAINING:
                out.append(first)
                out += _remaining_length(remaining)
            else:
                raise ValueError(f"payload of {len(payload)} bytes too large for MQTT on {topic!r}")
            out += part
            out += payload
        return out
