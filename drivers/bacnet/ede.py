"""BACnet EDE files (Engineering Data Exchange): the point lists BACnet integrators hand each other.

An EDE file is semicolon-separated text. It opens with header lines of two cells (`PROJECT_NAME;...`,
`VERSION_OF_REFERENCEFILE;...`, `TIMESTAMP_OF_LAST_CHANGE;...`, `AUTHOR_OF_LAST_CHANGE;...`,
`VERSION_OF_LAYOUT;...`), then comment lines starting with `#` (the column titles), then one line per BACnet
object in this column order:

    keyname; device obj.-instance; object-name; object-type; object-instance; description;
    present-value-default; min-present-value; max-present-value; settable; supports COV; hi-limit; low-limit;
    state-text-reference; unit-code; vendor-specific-address

The object type and the unit are BACnet enumeration numbers (object type 0 is analog-input, 8 the device; unit
62 is degrees-celsius); the first five columns are mandatory. A device object's line names the device; every
other object with a present value becomes a point: its object name (made a valid point name), type,
instance, description, unit (through `units.unit_for`), and `writable` when settable. State texts live in a
separate file (`<project>_StateTexts.csv`: the same header lines, then `reference;text 1;text 2;...`) that an
object line refers to by number (state-text-reference); given that file, binary objects get `[text 1, text 2]`
(inactive, active) and multi-state objects their texts as `states`. Objects without a present value
(schedules, trend logs, notification classes...) are listed in the notes, not imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bacpypes3.basetypes import EngineeringUnits
from bacpypes3.primitivedata import ObjectType

from drivers.bacnet.config import BINARY_TYPES, COV_TYPES, MAX_INSTANCE, MULTISTATE_TYPES, BacnetPoint
from drivers.bacnet.names import sanitize_name, unique_name
from drivers.bacnet.semantics import tags_for
from drivers.bacnet.units import UNITS, unit_with_note
from edge.sdk import DeviceSpec, PointList, PointListError, PointRow

__all__ = ["EDE_FORMAT", "read_ede", "read_state_texts", "write_ede"]

EDE_FORMAT = "ede"
HEADER_KEYS = (
    "PROJECT_NAME",
    "VERSION_OF_REFERENCEFILE",
    "TIMESTAMP_OF_LAST_CHANGE",
    "AUTHOR_OF_LAST_CHANGE",
    "VERSION_OF_LAYOUT",
)
COLUMNS = (
    "keyname", "device obj.-instance", "object-name", "object-type", "object-instance", "description",
    "present-value-default", "min-present-value", "max-present-value", "settable", "supports COV",
    "hi-limit", "low-limit", "state-text-reference", "unit-code", "vendor-specific-address",
)  # fmt: skip
_MANDATORY = 5
_DEVICE_TYPE = 8
_LAYOUT_VERSION = "2.2"
_MAX_UNIT = 65535  # BACnetEngineeringUnits is extensible up to an unsigned 16-bit value
# Objects whose present value the driver reads: those with Status_Flags a COV reports, and the value objects.
_POINT_TYPES = COV_TYPES | frozenset(
    {"characterstring-value", "large-analog-value", "date-value", "time-value"}
)
_YES = frozenset({"y", "yes", "1", "true", "x", "w"})
_UNIT_CODES = {gateway: bacnet for bacnet, gateway in reversed(UNITS.items())}  # first BACnet name wins


def read_state_texts(text: str) -> dict[str, tuple[str, ...]]:
    """An EDE state texts file: reference number -> its texts (1, 2, ...); raises `PointListError` (in the
    companion file) naming each bad line."""
    texts: dict[str, tuple[str, ...]] = {}
    problems: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        cells = [cell.strip() for cell in raw.split(";")]
        if not raw.strip() or raw.lstrip().startswith("#") or cells[0].upper() in HEADER_KEYS:
            continue
        if not cells[0].isdigit():
            problems.append((number, f"{cells[0]!r} is not a state text reference number"))
        elif cells[0] in texts:
            problems.append((number, f"reference {cells[0]} is defined twice"))
        else:
            while cells and not cells[-1]:
                cells.pop()
            texts[cells[0]] = tuple(cells[1:])
    if problems:
        raise PointListError(problems, in_companion=True)
    return texts


def read_ede(text: str, state_texts: dict[str, tuple[str, ...]] | None = None) -> PointList:
    """The points of an EDE file, by device instance (with `states` from `state_texts`, when given); raises
    `PointListError` naming each bad line."""
    rows: list[PointRow] = []
    notes: list[str] = []
    problems: list[tuple[int, str]] = []
    devices: dict[str, dict[str, Any]] = {}
    names: dict[str, set[str]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        cells = [cell.strip() for cell in raw.split(";")]
        if not raw.strip() or raw.lstrip().startswith("#") or cells[0].upper() in HEADER_KEYS:
            continue
        if len(cells) < _MANDATORY or not all(cells[:_MANDATORY]):
            problems.append(
                (
                    number,
                    f"an object line has {_MANDATORY} mandatory cells ({'; '.join(COLUMNS[:_MANDATORY])})",
                )
            )
            continue
        try:
            device = _instance(cells[1], "device obj.-instance")
            object_type = _object_type(cells[3])
            instance = _instance(cells[4], "object-instance")
        except ValueError as exc:
            problems.append((number, str(exc)))
            continue
        if object_type == "device":
            devices[str(device)] = {"device_instance": device, "name": sanitize_name(cells[2])}
            continue
        if object_type not in _POINT_TYPES:
            notes.append(
                f"line {number}: {object_type} {instance} ({cells[2]}) has no present value to read, left out"
            )
            continue
        try:
            fields = _point(cells, object_type, instance, names.setdefault(str(device), set()))
            if state_texts is not None:
                fields |= _states(object_type, cells, state_texts)
        except ValueError as exc:
            problems.append((number, str(exc)))
            continue
        rows.append(PointRow(number, fields, str(device)))
        devices.setdefault(str(device), {"device_instance": device})
    if problems:
        raise PointListError(problems)
    return PointList(rows, notes, devices)


def _point(cells: list[str], object_type: str, instance: int, taken: set[str]) -> dict[str, Any]:
    cell = (cells + [""] * len(COLUMNS))[: len(COLUMNS)]
    name = unique_name(sanitize_name(cell[2]) or sanitize_name(cell[0]) or f"{object_type}-{instance}", taken)
    fields: dict[str, Any] = {"name": name, "object_type": object_type, "instance": instance}
    description = cell[5]
    if cell[14]:
        if not cell[14].isdigit() or int(cell[14]) > _MAX_UNIT:
            raise ValueError(
                f"unit-code {cell[14]!r} is not a BACnet engineering unit number (0..{_MAX_UNIT})"
            )
        # a proprietary unit stays its number, noted in the description
        unit, description = unit_with_note(str(EngineeringUnits(int(cell[14]))), description)
        if unit is not None:
            fields["unit"] = unit
    if description:
        fields["description"] = description
    if cell[9].lower() in _YES:
        fields["writable"] = True
    writable = bool(fields.get("writable"))
    fields.update(tags_for(object_type, fields.get("unit"), cell[2] or cell[0], description, writable))
    return fields


def _states(object_type: str, cells: list[str], state_texts: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """`states` for a binary or multi-state object from its state-text-reference; {} for other objects."""
    reference = cells[13] if len(cells) > 13 else ""
    binary, multistate = object_type in BINARY_TYPES, object_type in MULTISTATE_TYPES
    if not reference or not (binary or multistate):
        return {}
    texts = state_texts.get(reference)
    if texts is None:
        raise ValueError(f"state-text-reference {reference} is not in the state texts file")
    texts = texts[:2] if binary else texts
    if len(texts) < 2 or not all(texts) or len(set(texts)) != len(texts):
        raise ValueError(f"state texts {reference} ({'; '.join(texts)}) are not distinct, non-empty texts")
    return {"states": list(texts)}


def _instance(text: str, column: str) -> int:
    if not text.isdigit() or int(text) > MAX_INSTANCE:
        raise ValueError(f"{column} {text!r} is not an instance number 0..{MAX_INSTANCE}")
    return int(text)


def _object_type(text: str) -> str:
    try:
        name = str(ObjectType(int(text) if text.isdigit() else text))
    except (ValueError, TypeError, KeyError):
        name = ""
    if not name or name.isdigit():
        raise ValueError(f"object-type {text!r} is not a standard BACnet object type (e.g. 0 = analog-input)")
    return name


def write_ede(devices: Sequence[DeviceSpec], project: str = "edge gateway") -> str:
    """An EDE file listing every device (with a known instance) and every BACnet point of `devices`."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    lines = [
        f"PROJECT_NAME;{project}",
        "VERSION_OF_REFERENCEFILE;1",
        f"TIMESTAMP_OF_LAST_CHANGE;{stamp}",
        "AUTHOR_OF_LAST_CHANGE;edge point export",
        f"VERSION_OF_LAYOUT;{_LAYOUT_VERSION}",
        "#" + ";".join("mandatory" if i < _MANDATORY else "optional" for i in range(len(COLUMNS))),
        "# " + ";".join(COLUMNS),
    ]
    for device in devices:
        instance = getattr(device.connection, "device_instance", None)
        key = "" if instance is None else str(instance)
        if instance is not None:
            lines.append(_line(device.name, key, device.name, _DEVICE_TYPE, instance))
        for point in device.points:
            if isinstance(point, BacnetPoint) and point.is_present_value:
                lines.append(_point_line(device.name, key, point))
    return "\n".join(lines) + "\n"


def _point_line(device: str, key: str, point: BacnetPoint) -> str:
    unit = _UNIT_CODES.get(point.unit or "")
    return _line(
        f"{device}.{point.name}",
        key,
        point.name,
        int(ObjectType(point.object_type)),
        point.instance,
        description=point.description,
        settable="Y" if point.writable else "N",
        cov="Y" if point.object_type in COV_TYPES else "N",
        unit="" if unit is None else str(int(EngineeringUnits(unit))),
    )


def _line(
    keyname: str,
    device: str,
    name: str,
    object_type: int,
    instance: int,
    *,
    description: str = "",
    settable: str = "",
    cov: str = "",
    unit: str = "",
) -> str:
    cells = [keyname, device, name, str(object_type), str(instance), description.replace(";", ",")]
    cells += ["", "", "", settable, cov, "", "", "", unit, ""]
    return ";".join(cells)
