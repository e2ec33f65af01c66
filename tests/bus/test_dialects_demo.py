"""`edge demo` as an integrator meets it: a Sparkplug B host and Home Assistant, each with a tenant login made by
`edge tenant credentials add`, see every one of ACME's demo devices without any mapping (the one the demo's
platform deploys to the running gateway too), and a setpoint written
from each lands at the simulated BACnet device, read back over BACnet by a bacpypes3 client of this test.

The Sparkplug host decodes with the Tahu classes of an independent package (tests/bus/test_sparkplug.py's
`Host`); the Home Assistant side reads the discovery configs as Home Assistant does (tests/bus/test_homeassistant.py's
schema checks and Jinja2 rendering) and sends commands the way its number and select entities send them."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from bacpypes3.app import Application
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.pdu import Address

from edge.config import load_config
from edge.plugins import PluginRegistry
from tests.bus.test_homeassistant import TOPIC, check_config, check_state, render
from tests.bus.test_homeassistant import ha as ha_templates
from tests.bus.test_sparkplug import Host, kind, tahu
from tests.drivers.bacnet.test_bacnet_driver import free_udp_port
from tests.helpers import MqttRecorder, free_port, until, wait_port, wait_until

EDGE = [sys.executable, "-m", "edge.cli"]
# The demo's platform deploys this inverter to acme 8 s after start: the Sparkplug node and the Home Assistant
# discovery learn it live (Gateway.on_devices_changed). The tests wait for the deployment, then expect it too.
DEPLOYED = "inv-03"
ACME_DEVICES = {"inv-01", "ahu-1", "vav-1", DEPLOYED}  # `--devices 2 --vavs 1`: inv-02 is Globex's


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """`edge demo` (simulators, embedded broker, gateway) on free ports; (its config, its MQTT port)."""
    data = tmp_path_factory.mktemp("demo")
    mqtt_port = free_port()
    ports = ("--mqtt-port", str(mqtt_port), "--modbus-port", str(free_port()))
    ports += ("--cloud-port", str(free_port()), "--api-port", str(free_port()))
    process = subprocess.Popen(
        [*EDGE, "demo", "--devices", "2", "--vavs", "1", "--lifts", "0", "--data-dir", str(data), *ports],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_port(mqtt_port, 40)
        config = data / "edge.toml"
        wait_until(lambda: DEPLOYED in config.read_text(), 60, f"the demo's deployment of {DEPLOYED}")
        yield config, mqtt_port
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def login(config: Path, name: str) -> tuple[str, str]:
    """A tenant login for a local system, made as docs/mqtt-access.md says."""
    result = subprocess.run(
        [*EDGE, "tenant", "credentials", "add", "acme", name, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "applied to the running broker" in result.stdout, result
    found = dict(re.findall(r"^(username|password): (\S+)$", result.stdout, re.MULTILINE))
    return found["username"], found["password"]


def published_points(config: Path) -> dict[str, set[str]]:
    """ACME's devices (the deployed one included) and their published points, as the gateway loads the demo
    configuration."""
    loaded = load_config(config, PluginRegistry.from_entry_points())
    return {d.name: {p.name for p in d.points if p.publish} for d in loaded.devices if d.tenant == "acme"}


@pytest.fixture
async def bacnet_client() -> AsyncIterator[Application]:
    """A BACnet client of this test's own (not the gateway's driver), on a UDP port of its own."""
    app = Application.from_object_list(
        [
            DeviceObject(objectIdentifier=("device", 3999), objectName="test-client", vendorIdentifier=999),
            NetworkPortObject(
                f"127.0.0.1/8:{free_udp_port()}", objectIdentifier=("network-port", 1), objectName="np-1"
            ),
        ]
    )
    yield app
    app.close()


def bacnet_port(config: Path, device: str) -> str:
    """The simulated device's address, as the demo wrote it into its configuration."""
    devices = tomllib.loads(config.read_text())["devices"]
    return str(next(d for d in devices if d["name"] == device)["connection"]["address"])


async def lands(app: Application, address: str, obj: str, expected: float) -> None:
    """Wait until the simulated device's object reads `expected` (its present value, over BACnet)."""

    async def reads_expected() -> bool:
        value = await app.read_property(Address(address), obj, "present-value")
        return abs(float(value) - expected) < 1e-3

    await until(reads_expected, 15, f"{obj} = {expected} at the BACnet device {address}")


async def test_a_sparkplug_host_sees_every_demo_device_and_writes_a_setpoint(
    demo: tuple[Path, int], bacnet_client: Application
) -> None:
    config, port = demo
    points = published_points(config)
    assert set(points) == ACME_DEVICES
    host = Host(port, login(config, "scada"), group="acme", primary=False)
    try:
        # a host that joins an edge node already born asks for births (Ignition's "Request Refresh")
        ncmd = tahu.Payload()
        ncmd.metrics.add(name="Node Control/Rebirth", datatype=tahu.Boolean, boolean_value=True)
        host.command("spBv1.0/acme/NCMD/demo", ncmd)
        got = await asyncio.to_thread(
            host.wait,
            lambda m: {t.rsplit("/", 1)[1] for t, _ in m if kind(t) == "DBIRTH"} >= ACME_DEVICES,
            40,
        )
        births = {t.rsplit("/", 1)[1]: p for t, p in got if kind(t) == "DBIRTH"}
        assert set(births) == ACME_DEVICES, "Globex's devices are not in ACME's group"
        for device, payload in births.items():
            assert {m.name for m in payload.metrics} == points[device], device  # every point, no mapping
        setpoint = next(m for m in births["vav-1"].metrics if m.name == "zone-temp-setpoint")
        assert setpoint.datatype == tahu.Double

        dcmd = tahu.Payload()
        dcmd.metrics.add(alias=setpoint.alias, datatype=tahu.Double, double_value=19.5)
        host.command("spBv1.0/acme/DCMD/demo/vav-1", dcmd)
        await lands(bacnet_client, bacnet_port(config, "vav-1"), "analog-value,1", 19.5)  # zone-temp-setpoint
    finally:
        host.close()


async def test_home_assistant_sees_every_demo_device_and_writes_setpoints(
    demo: tuple[Path, int], bacnet_client: Application
) -> None:
    config, port = demo
    points = published_points(config)
    # Home Assistant's MQTT integration with a tenant login: what that login may read, it sees
    ha = MqttRecorder(port, "#", login=login(config, "homeassistant"))
    try:

        def entities(messages: list[tuple[str, bytes, bool]]) -> dict[str, dict[str, Any]]:
            return {t: orjson.loads(p) for t, p, _ in messages if t.startswith("homeassistant/") and p}

        def every_point_announced(messages: list[tuple[str, bytes, bool]]) -> bool:
            found: dict[str, set[str]] = {}
            for config_ in entities(messages).values():
                found.setdefault(config_["device"]["name"], set()).add(config_["name"])
            return found == points

        got = await asyncio.to_thread(ha.wait_for, every_point_announced, 60)
        announced = entities(got)
        state_topics = {e["state_topic"] for e in announced.values()}
        await asyncio.to_thread(ha.wait_for, lambda m: {t for t, _, _ in m} >= state_topics, 30)
        latest = {t: p for t, p, _ in ha.snapshot()}
        for topic, entity in announced.items():
            match = TOPIC.match(topic)
            assert match, topic
            check_config(match.group(1), entity)
            check_state(match.group(1), entity, latest[entity["state_topic"]])  # the kind announced fits
        by_name = {(e["device"]["name"], e["name"]): (t, e) for t, e in announced.items()}

        # each entity is available: its device's status and the gateway's, both readable with this login
        for _, entity in announced.items():
            for availability in entity["availability"]:
                payload = latest[availability["topic"]]
                shown = render(availability.get("value_template", "{{ value }}"), payload)
                assert shown == availability["payload_available"], (entity["unique_id"], shown)

        topic, supply = by_name[("ahu-1", "supply-air-temp-setpoint")]
        assert "/number/" in topic and supply["device_class"] == "temperature"
        ha.publish(supply["command_topic"], b"14.5")  # a number entity sends the value as text
        topic, mode = by_name[("ahu-1", "operating-mode")]
        assert "/select/" in topic and mode["options"] == ["off", "occupied", "unoccupied", "night-purge"]
        chosen = ha_templates.from_string(mode["command_template"]).render(value="night-purge")
        ha.publish(mode["command_topic"], chosen.encode())  # a select entity renders its command template
        address = bacnet_port(config, "ahu-1")
        await lands(bacnet_client, address, "analog-value,1", 14.5)  # supply-air-temp-setpoint
        await lands(bacnet_client, address, "multi-state-value,1", 4)  # operating-mode: the 4th state
    finally:
        ha.close()
