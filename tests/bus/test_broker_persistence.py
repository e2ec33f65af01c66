"""Nothing lost for a local subscriber with a persistent session: across gateway restarts, SIGKILL among them,
a paho subscriber (QoS 1, session kept by the broker) receives every event the outbox says went to the bus.
Compared by event id and by each device's sequence, which status events share with telemetry."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
from typer.testing import CliRunner

from edge.cli import app
from tests.bus.site_clients import SiteClient
from tests.e2e import write_config
from tests.helpers import SimulatorProcess, free_port, wait_port, wait_until

EDGE = [sys.executable, "-m", "edge.cli"]


def _published(data: Path, tenant: str) -> dict[str, tuple[str, int]]:
    """id -> (device, sequence) of the tenant's device events the outbox's MQTT cursor says the broker
    acknowledged."""
    with sqlite3.connect(data / "outbox.db") as db:
        query = "SELECT position FROM cursors WHERE consumer = 'mqtt' AND tenant = ?"
        (cursor,) = db.execute(query, (tenant,)).fetchone()
        rows = db.execute(
            "SELECT id, device, sequence FROM outbox WHERE device IS NOT NULL AND tenant = ? AND position <= ?",
            (tenant, cursor),
        )
        return {i: (d, s) for i, d, s in rows.fetchall()}


def test_a_persistent_subscriber_misses_nothing_across_restarts_and_kills(tmp_path: Path) -> None:
    simulator = SimulatorProcess(free_port(), 2, ["--sim-time", "12:00"])
    simulator.start()
    port = free_port()
    config = write_config(tmp_path / "edge.toml", mqtt_port=port, modbus_port=simulator.port, devices=2, mode="embedded")  # fmt: skip
    config.write_text(config.read_text().replace("[storage]", "autosave_interval = 3600\n[storage]"))
    added = CliRunner().invoke(app, ["tenant", "credentials", "add", "acme", "bms", "-c", str(config)])
    password = added.output.split("password: ")[1].split()[0]
    run = [*EDGE, "run", "-c", str(config)]
    gateway = subprocess.Popen(run, stderr=subprocess.DEVNULL)
    subscriber = None
    try:
        wait_port(port, 20)
        subscriber = SiteClient(port, "bms@acme", password, client_id="bms-persistent", persistent=True)
        subscriber.subscribe("edge/acme/events/#")
        # clean stop, SIGKILL, clean stop, SIGKILL: each while events flow; the subscriber stays away a while
        for stop in (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL):
            time.sleep(3)
            gateway.send_signal(stop)
            gateway.wait(30)
            time.sleep(0.5)  # the broker's session outlives its process: events keep queueing after restart
            gateway = subprocess.Popen(run, stderr=subprocess.DEVNULL)
            wait_port(port, 20)
        time.sleep(1.5)
    finally:
        gateway.terminate()
        gateway.wait(30)
        simulator.stop()
    published = _published(tmp_path / "data", "acme")
    assert subscriber is not None
    # the last events went out just before the clean stop; the subscriber reconnects to a broker that is gone,
    # so it must have them already or receive them from the next start: start once more and look
    gateway = subprocess.Popen(run, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 20)

        def received() -> set[str]:
            return {orjson.loads(m.payload)["id"] for m in subscriber.messages()}

        wait_until(lambda: set(published) <= received(), 20, "every published event", detail=lambda: sorted(published[i] for i in set(published) - received()))  # fmt: skip
    finally:
        subscriber.close()
        gateway.terminate()
        gateway.wait(30)
    events = [orjson.loads(m.payload) for m in subscriber.messages()]
    kinds = {e["type"] for e in events}
    assert {"org.edgegw.telemetry", "org.edgegw.device.status"} <= kinds, kinds
    by_device: dict[str, set[int]] = {}
    for event in events:
        by_device.setdefault(event["subject"], set()).add(int(event["sequence"]))
    for subject, seen in by_device.items():  # contiguous from 1: no gap a subscriber would have to explain
        assert seen == set(range(1, max(seen) + 1)), (
            subject,
            sorted(set(range(1, max(seen) + 1)) - seen)[:10],
        )
    assert len(published) > 30
