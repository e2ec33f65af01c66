"""Semantic tags a driver's discovery may propose for a point: a Brick class and Haystack marker tags.

The driver says what its protocol tells: the point's unit (the gateway's unit code), the words of its name and
description, and its role (`sensor`: a measured value; `setpoint`; `command`: an output; `status`: a state the
device reports). `propose_tags` answers with what those facts support and nothing more: a Brick class from the
classes listed here (a location such as supply air or zone air only when the name says it), and the matching
Haystack markers (`point` always, then location, medium, quantity and role). Points the facts say nothing about
get no tags: a wrong tag is worse than none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

__all__ = ["Role", "name_words", "propose_tags"]

Role = Literal["sensor", "setpoint", "command", "status"]

# abbreviations common in building automation point names
_ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    "sat": ("supply", "air", "temperature"),
    "rat": ("return", "air", "temperature"),
    "mat": ("mixed", "air", "temperature"),
    "oat": ("outside", "air", "temperature"),
    "dat": ("discharge", "air", "temperature"),
    "zat": ("zone", "air", "temperature"),
    "temp": ("temperature",),
    "tmp": ("temperature",),
    "rh": ("humidity",),
    "hum": ("humidity",),
    "sp": ("setpoint",),
    "stpt": ("setpoint",),
    "spt": ("setpoint",),
    "occ": ("occupancy",),
    "oa": ("outside", "air"),
    "ra": ("return", "air"),
    "sa": ("supply", "air"),
    "da": ("discharge", "air"),
    "dp": ("differential", "pressure"),
    "outdoor": ("outside",),
    "room": ("zone",),
    "space": ("zone",),
    "airflow": ("air", "flow"),
    "cfm": ("air", "flow"),
}
_LOCATIONS = ("supply", "return", "mixed", "outside", "discharge", "zone")
_TEMPERATURE_UNITS = frozenset({"Cel", "[degF]", "K"})
_PRESSURE_UNITS = frozenset({"Pa", "hPa", "kPa", "bar", "mbar", "[psi]", "[in_i'H2O]"})
_FLOW_UNITS = frozenset({"m3/h", "m3/s", "L/s", "L/min", "L/h", "[ft_i]3/min"})
_ELECTRIC: dict[str, tuple[str | None, str]] = {  # unit -> (Brick class of the sensor, Haystack quantity)
    "W": ("Active_Power_Sensor", "power"),
    "kW": ("Active_Power_Sensor", "power"),
    "MW": ("Active_Power_Sensor", "power"),
    "var": ("Reactive_Power_Sensor", "power"),
    "kvar": ("Reactive_Power_Sensor", "power"),
    "VA": (None, "power"),
    "Wh": ("Energy_Sensor", "energy"),
    "kWh": ("Energy_Sensor", "energy"),
    "MWh": ("Energy_Sensor", "energy"),
    "A": ("Current_Sensor", "current"),
    "V": ("Voltage_Sensor", "volt"),
    "Hz": ("Frequency_Sensor", "freq"),
}
_PARAMETERS = frozenset({"limit", "threshold", "deadband", "hysteresis", "gain", "delay"})  # not measurements
_HAYSTACK_ROLE = {"sensor": "sensor", "setpoint": "sp", "command": "cmd", "status": "sensor"}


def name_words(*texts: str) -> frozenset[str]:
    """Lower-case words of names and descriptions ('AHU01 Supply-Air Temp', 'zoneTempSp'), abbreviations
    expanded (sat, oat, rh, sp, ...)."""
    words: set[str] = set()
    for text in texts:
        spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)  # camelCase
        for word in re.split(r"[^A-Za-z0-9]+", spaced.lower()):
            if word:
                words.add(word)
                words.update(_ABBREVIATIONS.get(word, ()))
    return frozenset(words)


def propose_tags(unit: str | None, words: Iterable[str], role: Role) -> dict[str, str | list[str]]:
    """`{"brick": ..., "haystack": [...]}` (either may be missing), or {} when the facts say nothing."""
    said = frozenset(words)
    if said & _PARAMETERS:
        return {}
    if role != "setpoint" and said & {"setpoint", "set"}:
        role = "setpoint" if role in ("sensor", "command") and unit is not None else role
    found = _electric(unit, said, role) or _air(unit, said, role) or _binary(unit, said, role)
    if found is None:
        return {}
    brick, markers = found
    haystack = ["point", *dict.fromkeys(markers), _HAYSTACK_ROLE[role]]
    out: dict[str, str | list[str]] = {"haystack": list(dict.fromkeys(haystack))}
    if brick is not None:
        out["brick"] = brick
    return out


_Found = tuple[str | None, list[str]]


def _location(said: frozenset[str]) -> str | None:
    return next((place for place in _LOCATIONS if place in said), None)


def _electric(unit: str | None, said: frozenset[str], role: Role) -> _Found | None:
    known = _ELECTRIC.get(unit or "")
    if known is None:
        if (unit is None and said & {"pf"}) or {"power", "factor"} <= said:
            return ("Power_Factor_Sensor" if role == "sensor" else None), ["elec", "pf"]
        return None
    brick, quantity = known
    markers = ["elec", *(["dc"] if "dc" in said else ["ac"] if "ac" in said else []), quantity]
    if role != "sensor":
        brick = None
    return brick, markers


def _air(unit: str | None, said: frozenset[str], role: Role) -> _Found | None:
    place = _location(said)
    medium = "water" if said & {"water", "chw", "hw"} else "air"
    quantity: str | None = None
    if unit in _TEMPERATURE_UNITS:
        quantity = "Temperature"
    elif unit == "%" and "humidity" in said:
        quantity = "Humidity"
    elif unit == "ppm" and "co2" in said:
        return _co2(place, role)
    elif unit in _PRESSURE_UNITS:
        return _pressure(place, said, role)
    elif unit in _FLOW_UNITS:
        quantity = "Flow"
    elif unit == "%":
        return _position(said, role)
    if quantity is None:
        return None
    tag = {"Temperature": "temp", "Humidity": "humidity", "Flow": "flow"}[quantity]
    markers = [*([place] if place else []), medium, tag]
    suffix = "Sensor" if role in ("sensor", "status") else "Setpoint" if role == "setpoint" else None
    if suffix is None:
        return None, markers
    if medium != "air":
        return f"{quantity}_{suffix}", markers
    if quantity == "Flow":
        where = f"{place.capitalize()}_" if place in ("supply", "return", "outside", "discharge") else ""
        return f"{where}Air_Flow_{suffix}", markers
    if place is None or (place == "outside" and suffix == "Setpoint"):
        return f"{quantity}_{suffix}", markers
    return f"{place.capitalize()}_Air_{quantity}_{suffix}", markers


def _co2(place: str | None, role: Role) -> _Found:
    markers = [*([place] if place else []), "air", "co2"]
    if role == "setpoint":
        return "CO2_Setpoint", markers
    return ("Return_Air_CO2_Sensor" if place == "return" else "CO2_Level_Sensor"), markers


def _pressure(place: str | None, said: frozenset[str], role: Role) -> _Found:
    suffix = "Setpoint" if role == "setpoint" else "Sensor"
    if "filter" in said:
        return f"Filter_Differential_Pressure_{suffix}", ["air", "filter", "pressure"]
    if "static" in said or "duct" in said:
        where = "Supply_Air_" if place in ("supply", None) else ""
        return f"{where}Static_Pressure_{suffix}", ["air", "static", "pressure"]
    return f"Pressure_{suffix}", ["pressure"]


def _position(said: frozenset[str], role: Role) -> _Found | None:
    for part, marker in (("damper", "damper"), ("valve", "valve")):
        if part in said:
            kind = "Command" if role in ("command", "setpoint") else "Sensor"
            return f"{part.capitalize()}_Position_{kind}", [marker]
    if "fan" in said and "speed" in said:
        return ("Fan_Speed_Command" if role in ("command", "setpoint") else None), ["fan", "speed"]
    return None


def _binary(unit: str | None, said: frozenset[str], role: Role) -> _Found | None:
    if unit is not None:
        return None
    if "occupancy" in said or "occupied" in said:
        return ("Occupancy_Sensor" if role in ("sensor", "status") else "Occupancy_Command"), ["occupied"]
    if "smoke" in said:
        return "Smoke_Detection_Alarm", ["smoke", "alarm"]
    if "filter" in said and said & {"alarm", "dirty", "status"}:
        return "Filter_Status", ["filter", "alarm"]
    if "fan" in said and said & {"status", "proof", "run"} and role in ("sensor", "status"):
        return "Fan_Status", ["fan", "run"]
    if "fan" in said and said & {"enable", "start", "stop"}:
        return "Start_Stop_Command", ["fan", "enable"]
    if said & {"enable"} and role == "command":
        return "Enable_Command", ["enable"]
    if "mode" in said:
        return "Mode_Status" if role in ("sensor", "status") else "Mode_Command", ["mode"]
    return None
