"""Home Assistant MQTT discovery, checked as Home Assistant would read it: a paho client collects the retained
config topics, each payload is held against the documented schema (required keys per component, device
classes and their units as the Home Assistant docs list them, written below as data), templates are rendered
with Jinja2 as Home Assistant renders them, and a command sent the way Home Assistant sends it lands on the
simulated device."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jinja2
import orjson
import pytest
from pymodbus.client import AsyncModbusTcpClient

from edge.bus.ha_entities import entity_for
from edge.bus.topics import Topics
from edge.config import load_config
from edge.gateway import Gateway
from edge.sdk.errors import ConfigError
from tests.e2e import load
from tests.helpers import MosquittoProcess, MqttRecorder, SimulatorProcess, free_port, until

# From https://www.home-assistant.io/integrations/sensor/ ("The following device classes are supported for
# sensors"), the classes this gateway can emit, with the units the page lists for each.
SENSOR_UNITS: dict[str, set[str | None]] = {
    "apparent_power": {"mVA", "VA"},
    "battery": {"%"},
    "carbon_dioxide": {"ppm"},
    "carbon_monoxide": {"ppm"},
    "current": {"A", "mA"},
    "distance": {"km", "m", "cm", "mm", "mi", "nmi", "yd", "in"},
    "duration": {"d", "h", "min", "s", "ms", "µs"},
    "energy": {"J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "cal", "kcal", "Mcal", "Gcal"},
    "enum": {None},
    "frequency": {"Hz", "kHz", "MHz", "GHz"},
    "humidity": {"%"},
    "illuminance": {"lx"},
    "irradiance": {"W/m²", "BTU/(h⋅ft²)"},
    "moisture": {"%"},
    "power_factor": {None, "%"},
    "power": {"mW", "W", "kW", "MW", "GW", "TW"},
    "pressure": {"Pa", "kPa", "hPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi"},
    "reactive_energy": {"varh", "kvarh"},
    "reactive_power": {"var", "kvar"},
    "speed": {"ft/s", "in/d", "in/h", "in/s", "km/h", "kn", "m/s", "mph", "mm/d", "mm/s"},
    "temperature": {"°C", "°F", "K"},
    "volatile_organic_compounds_parts": {"ppm", "ppb"},
    "voltage": {"V", "mV", "µV", "kV", "MV"},
    "volume_flow_rate": {"m³/h", "m³/s", "ft³/min", "L/h", "L/min", "L/s", "gal/min", "mL/s"},
    "weight": {"kg", "g", "mg", "µg", "oz", "lb", "st"},
}
# https://www.home-assistant.io/integrations/number/ lists fewer units for some classes
NUMBER_UNITS: dict[str, set[str | None]] = {
    "current": {"A", "mA"},
    "frequency": {"Hz", "kHz", "MHz", "GHz"},
    "humidity": {None, "%"},
    "illuminance": {"lx"},
    "moisture": {None, "%"},
    "pressure": {"Pa", "kPa", "hPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi"},
    "temperature": {"°C", "°F", "K"},
    "voltage": {"V", "mV"},
}
# https://developers.home-assistant.io/docs/core/entity/sensor/ (state classes); energy-like classes accumulate
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
ACCUMULATING = {"energy", "reactive_energy"}
# Required keys per MQTT platform (the "required: true" entries of sensor.mqtt, binary_sensor.mqtt,
# number.mqtt, switch.mqtt, select.mqtt and text.mqtt on home-assistant.io)
REQUIRED = {
    "sensor": {"state_topic"},
    "binary_sensor": {"state_topic"},
    "number": {"command_topic"},
    "switch": set(),
    "select": {"command_topic", "options"},
    "text": {"command_topic"},
}
TOPIC = re.compile(r"^homeassistant/(\w+)/([a-zA-Z0-9_-]+)/([a-zA-Z0-9_-]+)/config$")

ha = jinja2.Environment()
ha.filters["tojson"] = lambda v: orjson.dumps(v).decode()


def render(template: str, payload: bytes) -> str:
    """A template as Home Assistant renders an incoming payload: `value` is the text, `value_json` the JSON
    (left undefined when the payload is not JSON)."""
    try:
        parsed = {"value_json": orjson.loads(payload)}
    except orjson.JSONDecodeError:
        parsed = {}
    return ha.from_string(template).render(value=payload.decode(), **parsed)


def check_config(component: str, config: dict[str, Any]) -> None:
    assert REQUIRED[component] <= set(config), (component, config)
    assert config["unique_id"] and config["device"]["identifiers"], config
    for availability in config["availability"]:
        assert availability["topic"], config
    device_class = config.get("device_class")
    unit = config.get("unit_of_measurement")
    if component == "sensor":
        if device_class is not None:
            assert unit in SENSOR_UNITS[device_class], (device_class, unit)
        if unit is not None:  # a number with a unit: long-term statistics need a state class
            assert config["state_class"] in STATE_CLASSES
        if device_class in ACCUMULATING:
            assert config["state_class"] in ("total", "total_increasing")
        if device_class == "enum":
            assert config["options"] and "state_class" not in config and unit is None
    if component == "number" and device_class is not None:
        assert unit in NUMBER_UNITS[device_class], (device_class, unit)


def check_state(component: str, config: dict[str, Any], payload: bytes) -> None:
    """The state Home Assistant would take from a retained point value is one the entity accepts: a number
    for numeric sensors and number entities, on/off for binary ones, one of the options for enumerations."""
    if orjson.loads(payload)["value"] is None:
        return  # Home Assistant shows unknown
    shown = render(config["value_template"], payload)
    where = (config["unique_id"], shown)
    if component == "binary_sensor":
        assert shown in (config["payload_on"], config["payload_off"]), where
    elif component == "switch":
        assert shown in (config["state_on"], config["state_off"]), where
    elif component == "select" or config.get("device_class") == "enum":
        assert shown in config["options"], where
    elif component == "number" or "state_class" in config:
        float(shown)  # raises if Home Assistant could not read it as a number


def write_config(path: Path, broker: int, modbus: int, devices: int, *, enabled: bool = True) -> Path:
    lines = [
        "[gateway]",
        'id = "gw-ha"',
        'data_dir = "data"',
        "[bus]",
        'mode = "external"',
        f"port = {broker}",
        "point_min_interval = 0.0",
        "[[tenants]]",
        'id = "acme"',
        "[tenants.homeassistant]",
        f"enabled = {'true' if enabled else 'false'}",
        "[[sites]]",
        'id = "roof"',
    ]
    for unit in range(1, devices + 1):
        lines += [
            "[[devices]]",
            f'name = "inv-{unit:02d}"',
            'driver = "modbus"',
            'tenant = "acme"',
            'site = "roof"',
            'profile = "sunspec-inverter"',
            "poll_interval = 0.2",
            "timeout = 0.5",
            f'connection = {{ host = "127.0.0.1", port = {modbus}, unit_id = {unit} }}',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def configs(messages: list[tuple[str, bytes, bool]]) -> dict[str, bytes]:
    """The latest payload per discovery config topic."""
    return {t: p for t, p, _ in messages if t.startswith("homeassistant/")}


async def register(port: int, address: int, unit: int) -> int:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2)
    await client.connect()
    try:
        reply = await client.read_holding_registers(address, count=1, device_id=unit)
        return int(reply.registers[0])
    finally:
        client.close()


async def test_home_assistant_discovers_every_point_and_writes_through_set(
    tmp_path: Path, private_mosquitto: MosquittoProcess
) -> None:
    sim = SimulatorProcess(free_port(), 2, ["--sim-time", "12:00"])
    sim.start()
    path = write_config(tmp_path / "edge.toml", private_mosquitto.port, sim.port, 2)
    recorder = MqttRecorder(private_mosquitto.port, "#")
    gateway = Gateway(*load(path))
    await gateway.start()
    try:
        found = await asyncio.to_thread(
            recorder.wait_for,
            lambda m: (
                sum("inv-01" in t and t.startswith("homeassistant/") for t in configs(m)) >= 15
                and any(t.endswith("/inv-01/power_limit") for t, _, _ in m)
            ),
        )
        announced = {t: orjson.loads(p) for t, p in configs(found).items()}
        latest = {t: p for t, p, _ in recorder.snapshot()}
        by_point = {
            c["unique_id"].rsplit("_inv-01_", 1)[-1]: (t, c) for t, c in announced.items() if "inv-01" in t
        }
        for topic, config in announced.items():
            match = TOPIC.match(topic)
            assert match, topic
            check_config(match.group(1), config)
            assert match.group(3) == config["unique_id"] and match.group(2) == "acme"
            if config["state_topic"] in latest:
                check_state(match.group(1), config, latest[config["state_topic"]])
        power_topic, power = by_point["ac_power"]
        assert "/sensor/" in power_topic and power["device_class"] == "power"
        assert power["unit_of_measurement"] == "W" and power["state_class"] == "measurement"
        energy = by_point["lifetime_energy"][1]
        assert energy["device_class"] == "energy" and energy["state_class"] == "total_increasing"
        assert by_point["cabinet_temperature"][1]["unit_of_measurement"] == "°C"
        assert by_point["power_factor"][1]["device_class"] == "power_factor"
        limit_topic, limit = by_point["power_limit"]
        assert (
            "/number/" in limit_topic
            and limit["command_topic"] == "edge/acme/cmd/roof/inv-01/power_limit/set"
        )
        assert {c["device"]["identifiers"][0] for c in announced.values()} == {
            "edge_gw-ha_acme_inv-01",
            "edge_gw-ha_acme_inv-02",
        }

        # the state and availability templates, rendered on what the gateway publishes there
        shown = render(power["value_template"], latest[power["state_topic"]])
        assert float(shown) == orjson.loads(latest[power["state_topic"]])["value"]
        status = power["availability"][0]
        assert render(status["value_template"], latest[status["topic"]]) == status["payload_available"]
        gateway_status = power["availability"][1]
        assert latest[gateway_status["topic"]].decode() == gateway_status["payload_available"]

        # Home Assistant's number entity publishes the new value as text on the command topic
        recorder.publish(limit["command_topic"], b"61")
        await until(lambda: _is(register(sim.port, 40300, 1), 61), 10, "power_limit 61 at the simulator")
    finally:
        await gateway.stop()
    inv2 = [t for t, p in configs(recorder.snapshot()).items() if "inv-02" in t and p]
    assert len(inv2) >= 15

    # inv-02 is removed from the configuration: its entities are deleted (empty retained configs)
    write_config(path, private_mosquitto.port, sim.port, 1)
    try:
        async with running(path):
            got = await asyncio.to_thread(
                recorder.wait_for, lambda m: all(configs(m)[t] == b"" for t in inv2)
            )
        assert all(configs(got)[t] for t in announced if "inv-01" in t), "inv-01 keeps its entities"
    finally:
        recorder.close()
        sim.stop()
    late = MqttRecorder(private_mosquitto.port, "homeassistant/#")  # what a Home Assistant starting now sees
    try:
        retained = await asyncio.to_thread(late.wait_for, lambda m: len(m) >= 15)
        assert retained and not any("inv-02" in t for t, _, _ in retained)
    finally:
        late.close()


async def test_a_device_down_at_start_shows_every_entity_unavailable(
    tmp_path: Path, private_mosquitto: MosquittoProcess
) -> None:
    """Modbus declares the kind of every point: its entities need no first value, and say the device is down."""
    nobody = free_port()  # no Modbus server listens there
    path = write_config(tmp_path / "edge.toml", private_mosquitto.port, nobody, 1)
    published = {p.name for p in load(path)[0].devices[0].points if p.publish}
    recorder = MqttRecorder(private_mosquitto.port, "#")
    try:
        async with running(path):
            got = await asyncio.to_thread(
                recorder.wait_for,
                lambda m: len(configs(m)) >= len(published) and "edge/acme/status/roof/inv-01" in dict_of(m),
            )
    finally:
        recorder.close()
    announced = {t: orjson.loads(p) for t, p in configs(got).items()}
    assert {c["name"] for c in announced.values()} == published
    status = dict_of(got)["edge/acme/status/roof/inv-01"]
    for topic, config in announced.items():
        check_config(TOPIC.match(topic).group(1), config)  # type: ignore[union-attr]
        device = config["availability"][0]
        assert render(device["value_template"], status) == device["payload_not_available"]
    kinds = {c["name"]: t.split("/")[1] for t, c in announced.items()}
    assert kinds["ac_power"] == "sensor" and kinds["power_limit"] == "number"


@contextlib.asynccontextmanager
async def running(path: Path) -> AsyncIterator[Gateway]:
    gateway = Gateway(*load(path))
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


def dict_of(messages: list[tuple[str, bytes, bool]]) -> dict[str, bytes]:
    return {t: p for t, p, _ in messages}


async def _is(reading: Any, value: int) -> bool:
    return bool(await reading == value)


def test_units_become_documented_device_classes() -> None:
    """Every unit the shipped profiles use maps to a class and unit Home Assistant's docs list."""
    from edge.sdk.drivers import DeviceSpec
    from edge.sdk.points import PointConfig

    topics = Topics("edge")
    spec = DeviceSpec("d", "acme", "roof", "modbus", None, (), 1.0, 1.0, "p")  # type: ignore[arg-type]
    cases = {
        ("ac_power", "W"): "power",
        ("energy", "kWh"): "energy",
        ("zone_temp", "Cel"): "temperature",
        ("zone_rh", "%"): "humidity",
        ("valve", "%"): None,
        ("co2", "ppm"): "carbon_dioxide",
        ("supply_pressure", "Pa"): "pressure",
        ("grid_frequency", "Hz"): "frequency",
        ("phase_current", "A"): "current",
        ("phase_voltage", "V"): "voltage",
        ("airflow", "m3/h"): "volume_flow_rate",
    }
    for (name, unit), expected in cases.items():
        entity = entity_for(topics, "gw", spec, PointConfig(name=name, unit=unit), "number", "homeassistant")
        assert entity.config.get("device_class") == expected, (name, unit, entity.config)
        check_config(entity.component, entity.config)


def test_discovery_needs_point_topics(tmp_path: Path) -> None:
    from edge.plugins import PluginRegistry

    path = write_config(tmp_path / "edge.toml", 1883, 502, 1)
    path.write_text(path.read_text().replace("point_min_interval = 0.0", "point_topics = false"))
    with pytest.raises(ConfigError, match=r"tenants\[0\] \(acme\)\.homeassistant.*point_topics"):
        load_config(path, PluginRegistry.from_entry_points())
