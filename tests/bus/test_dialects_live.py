"""Devices changed live (`Gateway.reconfigure`, as a cloud deployment or the console's commissioning runs it) reach
the site dialects at once: a Sparkplug B host (tests/bus/test_sparkplug.py's `Host`, Tahu classes of another
project) sees the added device born, the removed one dead and the changed one born again, in one session with
no seq gap; Home Assistant (a paho subscriber) sees the added device's entities announced and the removed
device's configs emptied."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import tomlkit

from edge.gateway import Gateway
from tests import e2e
from tests.bus.test_homeassistant import TOPIC, check_config, configs
from tests.bus.test_sparkplug import Host, kind, sessions
from tests.e2e import load
from tests.helpers import MosquittoProcess, MqttRecorder, SimulatorProcess, free_port

GROUP, NODE = "acme", "gw-live"


def write_config(path: Path, broker: int, modbus: int, devices: dict[str, float]) -> Path:
    """ACME with Sparkplug B and Home Assistant, and these inverters (inv-0N: Modbus unit N) at these poll
    intervals."""
    e2e.write_config(path, mqtt_port=broker, modbus_port=modbus, devices=3, tenants=("acme",))
    doc = tomlkit.parse(path.read_text())
    doc["gateway"]["id"] = NODE
    acme = doc["tenants"][0]
    acme["sparkplug"] = {"group_id": GROUP}
    acme["homeassistant"] = {"enabled": True}
    kept = tomlkit.aot()
    for device in doc["devices"]:
        if device["name"] in devices:
            device["poll_interval"] = devices[device["name"]]
            kept.append(device)
    doc["devices"] = kept
    path.write_text(tomlkit.dumps(doc))
    return path


def device_of(topic: str) -> str:
    return topic.rsplit("/", 1)[1]


async def test_devices_added_changed_and_removed_live_reach_sparkplug_and_home_assistant(
    tmp_path: Path, private_mosquitto: MosquittoProcess
) -> None:
    sim = SimulatorProcess(free_port(), 3, ["--sim-time", "12:00"])
    sim.start()
    path = write_config(
        tmp_path / "edge.toml", private_mosquitto.port, sim.port, {"inv-01": 0.2, "inv-02": 0.2}
    )
    host = Host(private_mosquitto.port, group=GROUP, primary=False)
    ha = MqttRecorder(private_mosquitto.port, "homeassistant/#")
    gateway = Gateway(*load(path))
    await gateway.start()
    try:
        await asyncio.to_thread(
            host.wait, lambda m: {device_of(t) for t, _ in m if kind(t) == "DBIRTH"} == {"inv-01", "inv-02"}
        )
        published = {p.name for p in load(path)[0].devices[0].points if p.publish}  # the same for each
        started = await asyncio.to_thread(
            ha.wait_for, lambda m: all(len(announced(m, d)) == len(published) for d in ("inv-01", "inv-02"))
        )
        inv2 = list(announced(started, "inv-02"))
        before = len(host.messages())

        # a deployment: inv-02 removed, inv-03 added, inv-01 changed (a new poll interval)
        write_config(path, private_mosquitto.port, sim.port, {"inv-01": 0.3, "inv-03": 0.2})
        changes = await gateway.reconfigure(load(path)[0])
        assert (changes.added, changes.changed, changes.removed) == (("inv-03",), ("inv-01",), ("inv-02",))

        def settled(m: list[tuple[str, Any]]) -> bool:
            seen = [(kind(t), device_of(t)) for t, _ in m[before:]]
            if not {("DDEATH", "inv-02"), ("DBIRTH", "inv-03"), ("DDEATH", "inv-01")} <= set(seen):
                return False
            return ("DBIRTH", "inv-01") in seen[seen.index(("DDEATH", "inv-01")) :]  # dies, then born again

        got = await asyncio.to_thread(host.wait, settled, 30)
        births = {device_of(t): p for t, p in got[before:] if kind(t) == "DBIRTH"}
        assert {m.name for m in births["inv-03"].metrics} == published  # every point of the new device
        aliases = [m.alias for d in ("inv-01", "inv-03") for m in births[d].metrics]
        assert len(aliases) == len(set(aliases)), "aliases stay unique over the edge node"
        old_inv2 = {m.alias for t, p in got[:before] if t.endswith("/inv-02") for m in p.metrics}
        assert not old_inv2 & set(aliases), "no alias the host learnt names another metric"
        (session,) = sessions(got)  # no new session (no NDEATH, no NBIRTH): the devices changed within it
        seqs = [p.seq for _, p in session]
        assert seqs == [i % 256 for i in range(len(seqs))], f"seq gap in {seqs}"

        # Home Assistant: inv-03's entities announced, inv-02's configs emptied (deleted), inv-01's kept
        got_ha = await asyncio.to_thread(
            ha.wait_for,
            lambda m: (
                all(configs(m)[t] == b"" for t in inv2)
                and {c["name"] for c in announced(m, "inv-03").values()} == published
            ),
        )
        for topic, config in announced(got_ha, "inv-03").items():
            match = TOPIC.match(topic)
            assert match, topic
            check_config(match.group(1), config)
        assert len(announced(got_ha, "inv-01")) == len(published), "inv-01 keeps its entities"
    finally:
        await gateway.stop()
        host.close()
        ha.close()
        sim.stop()


def announced(messages: list[tuple[str, bytes, bool]], device: str) -> dict[str, dict[str, Any]]:
    """The device's entities Home Assistant has now: config topic -> config (an emptied config is gone)."""
    return {t: orjson.loads(p) for t, p in configs(messages).items() if f"_{device}_" in t and p}
