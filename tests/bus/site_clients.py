"""A local system on the site's LAN, as an integrator would write it: a paho client over TLS, plain MQTT or
WebSockets, logging in with a tenant user's password or client certificate. Nothing of the gateway's code."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.helpers import free_port


class SiteClient:
    """Connects at construction; `refused` holds the CONNACK reason code, `error` a TLS or socket failure."""

    def __init__(
        self,
        port: int,
        username: str | None = None,
        password: str | None = None,
        *,
        host: str = "127.0.0.1",
        ca: Path | None = None,
        cert: tuple[Path, Path] | None = None,
        transport: str = "tcp",
        client_id: str | None = None,
        persistent: bool = False,
    ) -> None:
        self.got: list[mqtt.MQTTMessage] = []
        self.refused: int | None = None
        self.error: str | None = None
        self._lock = threading.Lock()
        self._up = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"site-{free_port()}",
            protocol=mqtt.MQTTv5,
            transport=transport,  # type: ignore[arg-type]
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if ca is not None:
            self._client.tls_set(
                ca_certs=str(ca),
                certfile=str(cert[0]) if cert else None,
                keyfile=str(cert[1]) if cert else None,
                cert_reqs=ssl.CERT_REQUIRED,  # verify the broker's certificate and its host name
            )
        self._client.on_connect = self._on_connect
        self._client.on_message = self._record
        properties = None
        if persistent:  # a session the broker keeps (and queues for) while this client is away
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
            self._client.reconnect_delay_set(1, 2)  # back within seconds, as a BMS on the site
        try:
            self._client.connect(host, port, clean_start=not persistent, properties=properties)
        except (OSError, ssl.SSLError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return
        self._client.loop_start()
        self._up.wait(5)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.refused = int(reason.value)
            client.disconnect()
        self._up.set()

    def _record(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.got.append(message)

    @property
    def connected(self) -> bool:
        return self.error is None and self.refused is None and self._client.is_connected()

    def subscribe(self, *filters: str) -> None:
        acked = threading.Event()
        self._client.on_subscribe = lambda *a: acked.set()
        self._client.subscribe([(f, 1) for f in filters])
        assert acked.wait(5), "no SUBACK"

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, properties: Properties | None = None
    ) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain, properties=properties).wait_for_publish(5)

    def messages(self) -> list[mqtt.MQTTMessage]:
        with self._lock:
            return list(self.got)

    def topics(self) -> set[str]:
        return {m.topic for m in self.messages()}

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
