"""The benchmark's MQTT subscriber: a separate process (its CPU is not the gateway's) that records every event.

    python -m bench.subscriber --port P --prefix edge --out received.json

It subscribes (QoS 1, persistent MQTT v5 session, so a broker restart loses nothing queued for it) to
`{prefix}/+/events/#` (or one `--tenant`'s), parses each CloudEvent with orjson and records, per event: receipt wall time, latency
(receipt - the event's `time`, the sample time), number of points, its id, its origin (the driver named in
its `source`, `/<gateway>/<driver>/<device>`, or `modules`...) and, per device (`source`), the `sequence`
numbers seen. `--mqtt311 --username U --password P` is for nats-server's MQTT listener (3.1.1 only; a clean
session there, and messages published over NATS arrive at QoS 0). Once subscribed it prints `{"ready": true}`; then a progress line (JSON) every
0.5 s; on SIGTERM/SIGINT it leaves (dropping its session), writes everything to `--out` and exits 0.

One paho network loop in the main thread, no second thread: ~2,000 events/s of 50 points (100k points/s)
costs it well under one core.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from array import array
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["Recorder", "main"]

TELEMETRY = "org.edgegw.telemetry"
_PROGRESS_EVERY = 0.5
_SESSION_EXPIRY = 600  # s: survives a broker restart of the outage test


class Recorder:
    """Everything the subscriber measures; `on_payload` is the hot path."""

    def __init__(self, keep_ids: bool = True) -> None:
        self.recv = array("d")  # receipt wall time, s
        self.lat_ms = array("d")  # receipt - sample time
        self.npts = array("i")  # points in the event (0 for non-telemetry events)
        self.ids: list[str] = []
        self.origin = array("b")  # index into `origins`
        self.origins: list[str] = []
        self._origin_of: dict[str, int] = {}  # source -> index
        self.keep_ids = keep_ids
        self.sequences: dict[str, array[int]] = {}
        self.events = 0
        self.points = 0
        self.bad = 0
        self._second_cache: dict[str, float] = {}

    def on_payload(self, payload: bytes | bytearray, now: float) -> None:
        try:
            ev = orjson.loads(payload)
            sample = self._epoch(ev["time"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.bad += 1
            return
        source = ev.get("source", "")
        origin = self._origin_of.get(source)
        if origin is None:
            origin = self._origin(source)
        n = len(ev["data"]["points"]) if ev.get("type") == TELEMETRY else 0
        seq = ev.get("sequence")
        if seq is not None:  # a device's telemetry and status events share its sequence
            seqs = self.sequences.get(source)
            if seqs is None:
                seqs = self.sequences[source] = array("q")
            seqs.append(int(seq))
        self.events += 1
        self.points += n
        self.recv.append(now)
        self.lat_ms.append((now - sample) * 1000.0)
        self.npts.append(n)
        self.origin.append(origin)
        if self.keep_ids:
            self.ids.append(ev["id"])

    def _origin(self, source: str) -> int:
        parts = source.split("/")
        name = parts[2] if len(parts) > 2 else "other"
        if name not in self.origins:
            self.origins.append(name)
        index = self._origin_of[source] = self.origins.index(name)
        return index

    def _epoch(self, text: str) -> float:
        """RFC 3339 with milliseconds, UTC ('2026-11-25T12:00:01.012Z'); whole seconds are cached."""
        head = text[:19]
        base = self._second_cache.get(head)
        if base is None:
            base = datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()
            if len(self._second_cache) > 4096:
                self._second_cache.clear()
            self._second_cache[head] = base
        frac = text[19:-1] if text.endswith("Z") else text[19:]
        return base + (float(frac) if frac.startswith(".") else 0.0)

    def summary(self) -> dict[str, Any]:
        devices = {}
        for source, seqs in self.sequences.items():
            distinct = set(seqs)
            first, last = min(distinct), max(distinct)
            devices[source] = {
                "first": first,
                "last": last,
                "received": len(seqs),
                "distinct": len(distinct),
                "gaps": (last - first + 1) - len(distinct),
                "duplicates": len(seqs) - len(distinct),
            }
        return {
            "events": self.events,
            "points": self.points,
            "unparsable": self.bad,
            "devices": devices,
            "recv": self.recv.tolist(),
            "lat_ms": self.lat_ms.tolist(),
            "npts": self.npts.tolist(),
            "origin": [self.origins[i] for i in self.origin],
            "ids": self.ids,
        }


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.subscriber")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--prefix", default="edge")
    p.add_argument("--tenant", default="+", help="only this tenant's events (default: every tenant)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--client-id", default=f"edge-bench-sub-{int(time.time() * 1000)}")
    p.add_argument(
        "--username", help="MQTT user (nats-server's MQTT listener: a user of the gateway's account)"
    )
    p.add_argument("--password", default="")
    p.add_argument("--mqtt311", action="store_true", help="MQTT 3.1.1 with a clean session (nats-server)")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="exit on its own after this long")
    args = p.parse_args(argv)

    rec = Recorder()
    state = {"stop": False, "ready": False, "connects": 0, "subscribed": 0}

    def on_signal(signum: int, frame: object) -> None:
        state["stop"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    version = MQTTProtocolVersion.MQTTv311 if args.mqtt311 else MQTTProtocolVersion.MQTTv5
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=version)
    if args.username:
        client.username_pw_set(args.username, args.password)
    topic = f"{args.prefix}/{args.tenant}/events/#"

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        state["connects"] += 1
        c.subscribe(topic, qos=1)

    def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        state["subscribed"] += 1
        if not state["ready"]:
            state["ready"] = True
            _emit({"ready": True, "t": time.time()})

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        rec.on_payload(msg.payload, time.time())

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    connect_props.SessionExpiryInterval = _SESSION_EXPIRY

    started = time.monotonic()
    next_progress = started
    need_connect, connected_once = True, False
    while not state["stop"] and time.monotonic() - started < args.max_seconds:
        if need_connect:
            try:
                if connected_once:
                    client.reconnect()
                elif args.mqtt311:
                    client.connect(args.host, args.port, keepalive=30)
                else:
                    client.connect(
                        args.host, args.port, keepalive=30, clean_start=False, properties=connect_props
                    )
                    connected_once = True
                need_connect = False
            except OSError:
                time.sleep(0.05)  # broker down: try again soon (bounded by --max-seconds / a signal)
                continue
        if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
            need_connect = True
        now = time.monotonic()
        if now >= next_progress:
            next_progress = now + _PROGRESS_EVERY
            _emit(
                {
                    "t": time.time(),
                    "events": rec.events,
                    "points": rec.points,
                    "connected": client.is_connected(),
                    "connects": state["connects"],
                }
            )
    if client.is_connected() and args.mqtt311:
        client.disconnect()
        client.loop(timeout=0.2)
    elif client.is_connected():
        bye = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
        bye.SessionExpiryInterval = 0  # leave no queue behind on the broker
        client.disconnect(properties=bye)
        client.loop(timeout=0.2)
    result = rec.summary()
    result["connects"] = state["connects"]
    tmp = args.out.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(result))
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
