"""One request/answer exchange with the running gateway over its MQTT bus, as any local system would do it:
subscribe to where the answer comes, publish the request, wait for the answer carrying our request id.
Used by `edge point write` and `edge module command` (and so `edge alarm ack`)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge.bus.access import local_login
from edge.config import LoadedConfig


def new_request_id() -> str:
    return uuid.uuid4().hex


def request(
    loaded: LoadedConfig,
    *,
    publish_topic: str,
    answer_topics: Sequence[str],
    payload: bytes,
    request_id: str,
    timeout: float,
    event_type: str | None = None,
) -> dict[str, Any] | None:
    """The answer (a JSON object with our `request_id`), or None after `timeout` seconds. An answer that is a
    CloudEvent of `event_type` is unwrapped to its data. Logs in as the gateway's local user when the embedded
    broker has tenant credentials (anonymous access is then off)."""
    answered, subscribed = threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            body = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            return
        if event_type is not None and isinstance(body, dict) and body.get("type") == event_type:
            body = body.get("data")
        if isinstance(body, dict) and body.get("request_id") == request_id:
            result.update(body)
            answered.set()

    bus = loaded.config.bus
    # on the NATS bus: the server's MQTT listener, which speaks MQTT 3.1.1 (the gateway's account sees it all)
    host, port = (bus.nats.mqtt_host, bus.nats.mqtt_port) if bus.mode == "nats" else (bus.host, bus.port)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"edge-cli-{request_id[:8]}",
        protocol=MQTTProtocolVersion.MQTTv311 if bus.mode == "nats" else MQTTProtocolVersion.MQTTv5,
    )
    username, password = local_login(loaded.data_dir, bus)
    if username is not None:
        client.username_pw_set(username, password)
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(host, port)
    client.loop_start()
    try:
        client.subscribe([(topic, 1) for topic in answer_topics])
        if not subscribed.wait(timeout):
            return None
        client.publish(publish_topic, payload, qos=1)
        return result if answered.wait(timeout) else None
    finally:
        client.loop_stop()
        client.disconnect()
