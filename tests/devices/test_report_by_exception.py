"""Report by exception end to end: a real Modbus server whose registers hold still, the gateway in process, the
outbox file and a paho subscriber. Polls that read nothing new become neither rows nor messages."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson

from edge.gateway import Gateway
from simulators.modbus_bank import BankSimulator
from tests.e2e import load
from tests.helpers import MosquittoProcess, MqttRecorder, free_port, until

REGISTERS = 10


def _config(path: Path, mqtt_port: int, modbus_port: int) -> Path:
    profile = ["[profile]", 'name = "still"', 'driver = "modbus"', "[defaults]", 'table = "holding"']
    profile += ['type = "uint16"', "report_deadband = 0", "max_silence = 30"]
    for address in range(REGISTERS):
        profile += ["[[points]]", f'name = "r{address}"', f"address = {address}"]
    (path.parent / "still.toml").write_text("\n".join(profile) + "\n")
    path.write_text(
        "\n".join(
            [
                "[gateway]",
                'id = "gw-rbe"',
                'data_dir = "data"',
                "[bus]",
                'mode = "external"',
                f"port = {mqtt_port}",
                'topic_prefix = "rbe"',
                "[storage]",
                "commit_interval_ms = 2",
                "[[tenants]]",
                'id = "acme"',
                "[[sites]]",
                'id = "roof"',
                "[[devices]]",
                'name = "bank-1"',
                'driver = "modbus"',
                'tenant = "acme"',
                'site = "roof"',
                'profile = "still.toml"',
                "poll_interval = 0.05",
                f'connection = {{ host = "127.0.0.1", port = {modbus_port}, unit_id = 1 }}',
            ]
        )
        + "\n"
    )
    return path


def _stored(gateway: Gateway) -> list[dict[str, object]]:
    with sqlite3.connect(gateway.outbox.path) as db:
        rows = db.execute(
            "SELECT body FROM outbox WHERE type = 'org.edgegw.telemetry' ORDER BY position"
        ).fetchall()
    return [orjson.loads(body)["data"]["points"] for (body,) in rows]


def _telemetry(recorder: MqttRecorder) -> list[bytes]:
    return [p for _, p, _ in recorder.snapshot() if orjson.loads(p)["type"] == "org.edgegw.telemetry"]


async def test_unchanged_polls_cost_neither_storage_nor_bus(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with BankSimulator(
        1, REGISTERS, free_port(), update_interval=0
    ) as sim:  # values move on request only
        loaded, registry = load(_config(tmp_path / "edge.toml", mosquitto.port, sim.port))
        recorder = MqttRecorder(mosquitto.port, "rbe/acme/events/#")
        gateway = Gateway(loaded, registry)
        await gateway.start()
        try:
            poller = next(iter(gateway.pollers.values()))
            await until(lambda: len(_stored(gateway)) == 1, what="the first poll stored")
            polls = poller.stats.polls
            await until(lambda: poller.stats.polls >= polls + 10, what="ten more polls")
            assert len(_stored(gateway)) == 1  # nothing moved: no event
            sim.update_now()  # every register moves by one
            await until(lambda: len(_stored(gateway)) == 2, what="the change stored")
            await until(lambda: len(_telemetry(recorder)) == 2, what="both events on the bus")
            await asyncio.sleep(0.3)  # a few more unchanged polls
        finally:
            await gateway.stop()
            recorder.close()
    first, changed = _stored(gateway)
    assert set(first) == set(changed) == {f"r{a}" for a in range(REGISTERS)}
    assert all(changed[name]["value"] == first[name]["value"] + 1 for name in first)  # type: ignore[index,operator]
    assert len(_telemetry(recorder)) == 2
