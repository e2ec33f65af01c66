"""What Home Assistant is told about one point: its component, device class, unit and state class, and topics.

A pure function of the device, the point and the kind of its values (bool, integer, number or text: what the
driver declares for the point, else what its first value shows):

| point                         | component      | notes                                                       |
|-------------------------------|----------------|-------------------------------------------------------------|
| read-only number              | sensor         | device class and state class from the unit (`_UNITS`), else from the point's semantic tags, else its name |
| read-only bool                | binary_sensor  | device class from the point's semantic tags (occupancy, smoke, problem, running...) |
| read-only text                | sensor         | `enum` with the point's choices when it has some            |
| writable number               | number         | mode box, a wide range: the device checks its own limits    |
| writable bool                 | switch         | sends `true` / `false`                                      |
| writable text with choices    | select         | sends the choice as a JSON string                           |
| writable text                 | text           | sends the text as a JSON string                             |

Every entity reads the point's retained topic (`value_json.value`), is available while the device's status
topic says `up` and the gateway's says `online`, and writes through the point's `/set` topic, so a command
from Home Assistant takes the same checks, result topic and event as any other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edge.bus.dialects import ha_id, ha_node_id
from edge.bus.topics import Topics
from edge.sdk.drivers import DeviceSpec
from edge.sdk.points import PointConfig, Scalar, ValueKind

__all__ = ["Entity", "entity_for", "entity_id", "kind_of"]

MEASUREMENT, TOTAL_INCREASING = "measurement", "total_increasing"

# unit as profiles write it -> (Home Assistant's unit, device class or None, state class)
_UNITS: dict[str, tuple[str, str | None, str]] = {
    **{u: (u, "power", MEASUREMENT) for u in ("mW", "W", "kW", "MW", "GW")},
    **{u: (u, "energy", TOTAL_INCREASING) for u in ("Wh", "kWh", "MWh", "GWh", "J", "kJ", "MJ", "GJ")},
    **{u: (u, "apparent_power", MEASUREMENT) for u in ("VA", "mVA")},
    **{u: (u, "reactive_power", MEASUREMENT) for u in ("var", "kvar")},
    **{u: (u, "reactive_energy", TOTAL_INCREASING) for u in ("varh", "kvarh")},
    **{u: ("°C", "temperature", MEASUREMENT) for u in ("°C", "degC", "Cel", "℃")},
    **{u: ("°F", "temperature", MEASUREMENT) for u in ("°F", "degF", "℉")},
    "K": ("K", "temperature", MEASUREMENT),
    **{u: (u, "pressure", MEASUREMENT) for u in ("Pa", "kPa", "hPa", "bar", "cbar", "mbar", "psi", "mmHg")},
    **{u: (u, "current", MEASUREMENT) for u in ("A", "mA")},
    **{u: (u, "voltage", MEASUREMENT) for u in ("V", "mV", "kV")},
    **{u: (u, "frequency", MEASUREMENT) for u in ("Hz", "kHz", "MHz")},
    "lx": ("lx", "illuminance", MEASUREMENT),
    **{u: (u, "volume_flow_rate", MEASUREMENT) for u in ("m³/h", "m³/s", "L/min", "L/s", "L/h")},
    "m3/h": ("m³/h", "volume_flow_rate", MEASUREMENT),
    **{u: (u, "weight", MEASUREMENT) for u in ("kg", "g")},
    **{u: (u, "distance", MEASUREMENT) for u in ("m", "cm", "mm", "km")},
    **{u: (u, "duration", MEASUREMENT) for u in ("s", "ms", "min", "h", "d")},
    **{u: (u, "speed", MEASUREMENT) for u in ("m/s", "km/h")},
    "W/m²": ("W/m²", "irradiance", MEASUREMENT),
}

# '%' and 'ppm' say what is measured only with the point's name: (words in the name, device class)
_BY_NAME: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    "%": (
        (("humidity", "rh", "hum"), "humidity"),
        (("battery", "soc"), "battery"),
        (("moisture",), "moisture"),
        (("pf", "power_factor", "cosphi"), "power_factor"),
    ),
    "ppm": (
        (("co2",), "carbon_dioxide"),
        (("co",), "carbon_monoxide"),
        (("voc", "tvoc"), "volatile_organic_compounds_parts"),
    ),
}

# What a point's semantic tags (the words of its Brick class, its Haystack tags) say that '%', 'ppm' or no unit
# does not: (words that must all be there, device class), first match wins.
_NUMBER_BY_TAGS: tuple[tuple[frozenset[str], str], ...] = tuple(
    (frozenset(words.split()), device_class)
    for words, device_class in (
        ("humidity", "humidity"),
        ("co2", "carbon_dioxide"),
        ("battery", "battery"),
        ("state charge", "battery"),
        ("power factor", "power_factor"),
        ("pf", "power_factor"),
        ("moisture", "moisture"),
        ("illuminance", "illuminance"),
        ("voc", "volatile_organic_compounds_parts"),
    )
)
_BINARY_BY_TAGS: tuple[tuple[frozenset[str], str], ...] = tuple(
    (frozenset(words.split()), device_class)
    for words, device_class in (
        ("occupancy", "occupancy"),
        ("occupied", "occupancy"),
        ("smoke", "smoke"),
        ("alarm", "problem"),
        ("fault", "problem"),
        ("leak", "moisture"),
        ("door", "door"),
        ("window", "window"),
        ("run", "running"),
        ("fan status", "running"),
        ("pump status", "running"),
        ("enable", "power"),
    )
)

# A number entity takes fewer device classes than a sensor (Home Assistant's number docs)
_NUMBER_CLASSES = frozenset(
    ("temperature", "humidity", "pressure", "current", "voltage", "frequency", "illuminance", "moisture")
)


@dataclass(frozen=True, slots=True)
class Entity:
    unique_id: str
    component: str
    config_topic: str
    config: dict[str, Any]


def _tag_words(point: PointConfig) -> frozenset[str]:
    """The words of the point's Brick class (Zone_Air_Humidity_Sensor: zone air humidity sensor) and its
    Haystack tags, lower case."""
    words = {w.lower() for w in (point.brick or "").split("_") if w}
    return frozenset(words | {t.lower() for t in point.haystack})


def _by_tags(point: PointConfig, table: tuple[tuple[frozenset[str], str], ...]) -> str | None:
    words = _tag_words(point)
    return next((device_class for needed, device_class in table if needed <= words), None) if words else None


def _classify(point: PointConfig) -> tuple[str | None, str | None, str]:
    """(unit, device class, state class) of a numeric point."""
    unit = point.unit
    known = _UNITS.get(unit) if unit is not None else None
    if known is not None:
        return known
    tagged = _by_tags(point, _NUMBER_BY_TAGS)
    if tagged is not None:
        return unit, tagged, MEASUREMENT
    if unit is None:
        return None, None, MEASUREMENT
    words = set(re.split(r"[^a-z0-9]+", point.name.lower()))
    for keys, device_class in _BY_NAME.get(unit, ()):
        if words & set(keys) or any(point.name.lower().startswith(k) for k in keys if len(k) > 2):
            return unit, device_class, MEASUREMENT
    return unit, None, MEASUREMENT


def kind_of(point: PointConfig, value: Scalar) -> ValueKind:
    """The kind a value shows, for points whose driver declares none."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "text"
    return "integer" if isinstance(value, int) and not point.is_scaled else "number"


def entity_id(gateway_id: str, spec: DeviceSpec, point: str) -> str:
    """A point's Home Assistant unique id (also the `<object_id>` of its config topic)."""
    return ha_id("edge", gateway_id, spec.tenant, spec.name, point)


def entity_for(
    topics: Topics,
    gateway_id: str,
    spec: DeviceSpec,
    point: PointConfig,
    kind: ValueKind,
    discovery_prefix: str,
) -> Entity:
    """The discovery config of one point whose values are of `kind`."""
    tenant, site, device = spec.tenant, spec.site, spec.name
    unique_id = entity_id(gateway_id, spec, point.name)
    state_topic = topics.point(tenant, site, device, point.name)
    config: dict[str, Any] = {
        "name": point.name,
        "unique_id": unique_id,
        "state_topic": state_topic,
        "value_template": "{{ value_json.value }}",
        "json_attributes_topic": state_topic,
        "json_attributes_template": "{{ {'quality': value_json.quality} | tojson }}",
        "availability": [
            {
                "topic": topics.device_status(tenant, site, device),
                "value_template": "{{ value_json.status }}",
                "payload_available": "up",
                "payload_not_available": "down",
            },
            {
                "topic": topics.gateway_status(gateway_id),
                "payload_available": "online",
                "payload_not_available": "offline",
            },
        ],
        "availability_mode": "all",
        "device": {
            "identifiers": [ha_id("edge", gateway_id, tenant, device)],
            "name": device,
            "model": spec.profile,
            "manufacturer": f"{spec.driver} device via edge gateway {gateway_id}",
            "suggested_area": site,
        },
        "origin": {"name": "edge gateway"},
    }
    choices = point.choices
    if kind == "bool":
        on_off = "{{ 'ON' if value_json.value else 'OFF' }}"
        config.update(value_template=on_off, payload_on="ON", payload_off="OFF")
        component = "binary_sensor"
        binary_class = _by_tags(point, _BINARY_BY_TAGS)
        if binary_class is not None and not point.writable:
            config["device_class"] = binary_class
        if point.writable:
            component = "switch"
            config.update(
                command_topic=topics.command(tenant, site, device, point.name),
                payload_on="true",
                payload_off="false",
                state_on="ON",
                state_off="OFF",
            )
    elif kind == "text":
        component = "sensor"
        if choices:
            config.update(device_class="enum", options=list(choices))
        if point.writable:
            component = "select" if choices else "text"
            config.pop("device_class", None)
            if not choices:
                config.pop("options", None)
            config.update(
                command_topic=topics.command(tenant, site, device, point.name),
                command_template="{{ value | tojson }}",
            )
    else:
        unit, device_class, state_class = _classify(point)
        if unit is not None:
            config["unit_of_measurement"] = unit
        component = "sensor"
        if point.writable:
            component = "number"
            config.update(
                command_topic=topics.command(tenant, site, device, point.name),
                mode="box",
                min=-1e9,
                max=1e9,
                step=1 if kind == "integer" else 0.001,
            )
            if device_class in _NUMBER_CLASSES:
                config["device_class"] = device_class
        else:
            config["state_class"] = state_class
            if device_class is not None:
                config["device_class"] = device_class
    topic = f"{discovery_prefix}/{component}/{ha_node_id(tenant)}/{unique_id}/config"
    return Entity(unique_id, component, topic, config)
