"""A module consuming through JetStream gets every event at least once across a kill -9 of the gateway."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import nats

from edge.bus.nats import jetstream_name
from tests.bus.nats_server import GATEWAY, NatsServer, gateway_config
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _child(config: Path, record: Path, *, produce: bool) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "tests.bus.nats_module_child", str(config), str(record)]
    env = {
        **os.environ,
        "EDGE_PROBE_RECORD": str(record),
        "PYTHONPATH": str(ROOT),
        "EDGE_LOG_LEVEL": "WARNING",
    }
    log = (config.parent / "child.log").open("ab")
    return subprocess.Popen(
        [*args, *(["--produce"] if produce else [])], cwd=ROOT, env=env, stdout=log, stderr=log
    )


def _recorded(record: Path) -> list[str]:
    return record.read_text().split() if record.exists() else []


def _outbox_ids(data: Path) -> set[str]:
    with sqlite3.connect(data / "outbox.db") as db:
        rows = db.execute("SELECT id FROM outbox WHERE tenant = 'acme' AND type = 'org.edgegw.telemetry'")
        return {row[0] for row in rows}


def test_a_jetstream_module_sees_every_event_at_least_once_across_a_gateway_kill_9(
    tmp_path: Path, private_nats: NatsServer
) -> None:
    config = gateway_config(tmp_path / "edge.toml", private_nats, extra='[[modules]]\nname = "nats_probe"\n')
    record = tmp_path / "seen.txt"
    child = _child(config, record, produce=True)
    try:
        wait_until(lambda: len(_recorded(record)) >= 400, 30.0, "the module handled 400 events")
        child.send_signal(signal.SIGKILL)  # mid-stream: events in flight to NATS, to the module, unacked
        child.wait(10)
        before_kill = len(_recorded(record))
        child = _child(config, record, produce=False)
        log = tmp_path / "child.log"
        wait_until(lambda: log.read_text().count("started") == 2, 30.0, "the gateway started again")
        committed = _outbox_ids(tmp_path / "data")
        assert len(committed) >= before_kill
        wait_until(
            lambda: committed <= set(_recorded(record)),
            30.0,
            "every committed event reached the module",
            detail=lambda: f"{len(committed - set(_recorded(record)))} missing",
        )
        child.send_signal(signal.SIGTERM)
        assert child.wait(20) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
    seen = _recorded(record)
    assert set(seen) == committed  # nothing lost, nothing invented
    redelivered = len(seen) - len(set(seen))
    assert redelivered < 1000  # at-least-once: only what was unacknowledged at the kill comes again
    acked = asyncio.run(_acknowledged(private_nats))
    assert acked == len(committed)  # it went through the durable consumer, which acknowledged them all


async def _acknowledged(server: NatsServer) -> int:
    nc = await nats.connect(server.url, user=GATEWAY.name, password=GATEWAY.password)
    try:
        stream = jetstream_name("edge", "acme", "events")
        info = await nc.jetstream().consumer_info(stream, jetstream_name("module:nats_probe:0", "acme"))
        assert info.num_ack_pending == 0
        return int(info.ack_floor.stream_seq if info.ack_floor else 0)
    finally:
        await nc.close()
