"""SunSpec point maps generated from the official model definitions, for discovery.

The definitions are the SunSpec Alliance's own, as pysunspec2 ships them (`sunspec2/models/json`), and its
`Model` lays each model out: every point's offset, including repeating groups sized by a count point or by the
model length, and the legacy common model of 65 registers (without its Pad). This module only translates those
points into this driver's `[[points]]`: types, scale factors (`sunssf` points, referenced by `scale_factor`, or
a constant `scale`), units, enumeration labels, `writable` for access RW, and `sunspec = true` so that
"not implemented" markers become faults.

Names are `<model>.<point>` with the model's group name (`inverter_three_phase.W`, `DERMeasureAC.TmpCab`), a repeated
group's index (`DERVoltVar.Crv1.Pt2.V`) and `_2`, `_3`... for a model that occurs again in the chain.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sunspec2 import device as sunspec_device
from sunspec2 import mdef

from drivers.modbus.config import MAX_READ_REGISTERS
from edge.sdk import Name
from edge.sdk.tags import Role, name_words, propose_tags

__all__ = ["SunSpecModelError", "model_points", "profile_name"]

# SunSpec point type -> this driver's type; `pad` (alignment) and `ipv6addr` (16 bytes) have no point.
_TYPES: dict[str, str] = {
    "int16": "int16", "uint16": "uint16", "count": "uint16", "acc16": "acc16", "enum16": "uint16",
    "bitfield16": "uint16", "sunssf": "sunssf", "int32": "int32", "uint32": "uint32", "acc32": "acc32",
    "enum32": "uint32", "bitfield32": "uint32", "ipaddr": "uint32", "int64": "int64", "uint64": "uint64",
    "acc64": "acc64", "eui48": "uint64", "float32": "float32", "float64": "float64", "string": "string",
}  # fmt: skip
_SKIPPED_TYPES = frozenset({"pad", "ipv6addr"})
_HEADER = frozenset({"ID", "L"})  # model id and length: the chain walk reads them, the map does not need them
# SunSpec's unit names -> the ones the shipped profiles use (UCUM, as BACnet's and Home Assistant's lists)
_UNITS = {"C": "Cel", "Pct": "%", "Var": "var", "VAr": "var", "Varh": "varh", "VArh": "varh", "Secs": "s"}
_ENA = re.compile(r"_?Ena$")  # an enable point's name: the control's stem, then Ena
_PARAMETER = re.compile(r"Tms|Rvrt|Mod|Pri")  # a control's parameters, which no enable write follows
_MAX_NAME = 64
_MAX_DESCRIPTION = 200
_NAME = TypeAdapter(Name)  # the kernel's rule for point names (they become MQTT topic levels)

# pysunspec2 looks for definitions in the working directory first: only its own shipped ones count here
sunspec_device.set_model_defs_path([sunspec_device.models_dir])


class SunSpecModelError(Exception):
    """A model without a definition, or whose registers do not fit its definition."""


def model_points(
    model_id: int, address: int, length: int, registers: Sequence[int] | None, occurrence: int = 1
) -> tuple[list[dict[str, Any]], list[str]]:
    """The `[[points]]` of one model whose id register is at `address`, and notes on points left out.

    `registers` are the model's registers from its id on (needed to size repeating groups by their count
    point); `length` is the length register's value; `occurrence` counts the models of this id in the chain
    so far (2 for the second: its names end in `_2`). Raises `SunSpecModelError`."""
    try:
        definition = sunspec_device.get_model_def(model_id)
    except mdef.ModelDefinitionError:
        raise SunSpecModelError(f"model {model_id} has no SunSpec definition (a vendor model?)") from None
    data = b"".join(r.to_bytes(2, "big") for r in registers) if registers is not None else None
    try:
        model = sunspec_device.Model(
            model_id=model_id, model_addr=address, model_len=length, model_def=definition, data=data
        )
    except (sunspec_device.ModelError, mdef.ModelDefinitionError) as exc:
        raise SunSpecModelError(f"model {model_id} at {address}: {exc}") from None
    if model.error_info:
        problem = model.error_info.strip().replace("\n", "; ")
        raise SunSpecModelError(f"model {model_id} at {address}: {problem}")
    prefix = str(definition[mdef.GROUP][mdef.NAME]) + ("" if occurrence == 1 else f"_{occurrence}")
    names: dict[int, str] = {}  # id(point) -> our name: scale factors are resolved once every name is known
    placed: list[tuple[Any, Any, str]] = []  # (point, its group, name)
    notes: list[str] = []
    _collect(model, prefix, names, placed, notes)
    points = [_point(model, point, group, name, address, names, notes) for point, group, name in placed]
    _link_enables(placed, points, len(prefix) + 1)
    return points, notes


def _link_enables(placed: list[tuple[Any, Any, str]], points: list[dict[str, Any]], cut: int) -> None:
    """Give each control its enable register, as the definitions name them: an RW enumeration DISABLED/ENABLED
    named `<stem>Ena` or `<stem>_Ena` enables the RW points named `<stem>...` (WMaxLim_Ena: WMaxLimPct;
    WSetEna: WSet, WSetPct; PFWInjEna: PFWInj.PF), except their timing, reversion, mode and priority
    parameters, which take effect with the control's next enable."""
    enables: dict[str, tuple[int, int]] = {}  # stem -> (address, ENABLED value)
    for (point, _, name), out in zip(placed, points, strict=True):
        on = _enabled_value(point.pdef)
        if on is not None:
            enables[_ENA.sub("", name[cut:])] = (out["address"], on)
    stems = sorted(enables, key=len, reverse=True)  # the longest stem names the control most closely
    for (point, _, name), out in zip(placed, points, strict=True):
        relative = name[cut:]
        if not out.get("writable") or _enabled_value(point.pdef) is not None:
            continue
        stem = next(
            (s for s in stems if relative.startswith(s) and not _PARAMETER.search(relative[len(s) :])), None
        )
        if stem is not None:
            address, on = enables[stem]
            out["enable_address"] = address
            if on != 1:
                out["enable_value"] = on


def _enabled_value(definition: dict[str, Any]) -> int | None:
    """The ENABLED value of an enable point (RW enum16 named ...Ena with DISABLED/ENABLED), else None."""
    if definition.get(mdef.ACCESS) != mdef.ACCESS_RW or definition[mdef.TYPE] != "enum16":
        return None
    if not _ENA.search(str(definition[mdef.NAME])):
        return None
    symbols = {str(s[mdef.NAME]).upper(): int(s[mdef.VALUE]) for s in definition.get(mdef.SYMBOLS) or ()}
    return symbols.get("ENABLED") if set(symbols) == {"DISABLED", "ENABLED"} else None


def profile_name(manufacturer: str, model: str, model_ids: Sequence[int]) -> str:
    """'sunspec-edgesim-pv-10k-103-120-123': one profile per product and model chain."""
    words = ["sunspec", manufacturer, model, *(str(m) for m in model_ids if m != 1)]
    text = "-".join(w for w in words if w).lower()
    slug = "".join(c if c.isalnum() else "-" for c in text)
    while "--" in slug:
        slug = slug.replace("--", "-")
    return slug.strip("-")[:_MAX_NAME]


def _collect(
    group: Any, path: str, names: dict[int, str], placed: list[tuple[Any, Any, str]], notes: list[str]
) -> None:
    for point_name, point in group.points.items():
        kind = point.pdef[mdef.TYPE]
        if point_name in _HEADER and group is point.model:
            continue
        if kind in _SKIPPED_TYPES:
            if kind != "pad":
                notes.append(f"{path}.{point_name}: type {kind} not mapped")
            continue
        name = f"{path}.{point_name}"
        if kind == "string" and point.len > MAX_READ_REGISTERS:
            notes.append(f"{name}: a string of {point.len} registers, longer than one read, left out")
            continue
        if len(name) > _MAX_NAME or not _valid_name(name):
            notes.append(f"{name}: not a usable point name, left out")
            continue
        names[id(point)] = name
        placed.append((point, group, name))
    for group_name, member in group.groups.items():
        if isinstance(member, list):
            for index, repeated in enumerate(member, 1):
                _collect(repeated, f"{path}.{group_name}{index}", names, placed, notes)
        else:
            _collect(member, f"{path}.{group_name}", names, placed, notes)


def _point(
    model: Any, point: Any, group: Any, name: str, base: int, names: dict[int, str], notes: list[str]
) -> dict[str, Any]:
    definition = point.pdef
    kind = _TYPES[definition[mdef.TYPE]]
    out: dict[str, Any] = {"name": name, "table": "holding", "address": base + point.offset, "type": kind}
    if kind == "string":
        out["length"] = point.len
    units = definition.get(mdef.UNITS)
    if units:
        out["unit"] = _UNITS.get(units, units)
    if point.sf_required:
        if point.sf is None:  # a constant scale factor written in the definition
            out["scale"] = 10.0 ** int(point.sf_value)
        else:
            sf_point = group.points.get(point.sf) or model.points.get(point.sf)
            sf_name = names.get(id(sf_point)) if sf_point is not None else None
            if sf_name is not None:
                out["scale_factor"] = sf_name
            else:
                notes.append(f"{name}: its scale factor {point.sf} is not in the model; values are unscaled")
    symbols = definition.get(mdef.SYMBOLS)
    if symbols and definition[mdef.TYPE] in ("enum16", "enum32"):
        out["labels"] = {str(s[mdef.VALUE]): s[mdef.NAME] for s in symbols}
    if definition[mdef.TYPE] == "sunssf":
        out["publish"] = False
    if definition.get(mdef.ACCESS) == mdef.ACCESS_RW:
        out["writable"] = True
    out["sunspec"] = True
    description = _description(definition)
    if description:
        out["description"] = description
    if definition[mdef.TYPE] != "sunssf":
        role: Role = "setpoint" if out.get("writable") else "sensor"
        words = name_words(str(point.pdef[mdef.NAME]), str(definition.get(mdef.LABEL) or ""))
        out.update(propose_tags(out.get("unit"), words, role))
    return out


def _description(definition: dict[str, Any]) -> str:
    label, desc = str(definition.get(mdef.LABEL) or ""), str(definition.get(mdef.DESCRIPTION) or "")
    text = f"{label}: {desc}" if label and desc and label not in desc else desc or label
    return " ".join(text.split())[:_MAX_DESCRIPTION]


def _valid_name(name: str) -> bool:
    try:
        _NAME.validate_python(name)
    except ValidationError:
        return False
    return True
