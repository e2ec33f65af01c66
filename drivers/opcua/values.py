"""OPC UA values and status codes as the kernel wants them, and typed values for writes. Pure functions.

Quality follows the status code's severity bits (Part 4 §7.34.1): Good → the plain value; Uncertain* →
`Qualified(value, UNCERTAIN, "<name>")`; Bad* → `PointFault("<name>")` (the kernel publishes it as bad with
that reason). The name is looked up without the info bits, so `GoodOverload`-style flags do not hide it.
Values become the kernel's scalars: numbers, booleans and strings as they are, enumerations as integers, date
times as ISO 8601 strings, localized text as its text; arrays and structures are reported as faults.
"""

from __future__ import annotations

import datetime
import enum
import math
import sys
import uuid
from typing import Any

from asyncua.ua import DataValue, LocalizedText, NodeId, QualifiedName, Variant, VariantType
from asyncua.ua.status_codes import get_name_and_doc

from edge.sdk import PointFault, Qualified, Quality, RawValue, Scalar

_SEVERITY = 0xC0000000
_BAD = 0x80000000
_UNCERTAIN = 0x40000000
_CODE = 0xFFFF0000  # severity + sub code, without the info bits

_PLAIN = frozenset({float, int, bool, str})
_names: dict[int, str] = {}
_faults: dict[int, PointFault] = {}


def status_name(code: int) -> str:
    """'BadNodeIdUnknown' for 0x80340000, also with info bits set."""
    name = _names.get(code)
    if name is None:
        name = get_name_and_doc(code & _CODE)[0]
        if name in ("Good", "Uncertain", "Bad") and code & _CODE:
            name = f"{name} (0x{code:08X})"
        _names[code] = name
    return name


def is_good(code: int) -> bool:
    return code & _SEVERITY == 0


def fault(code: int) -> PointFault:
    """The (cached) fault for a bad status code."""
    found = _faults.get(code)
    if found is None:
        found = _faults[code] = PointFault(status_name(code))
    return found


def to_raw(dv: DataValue) -> RawValue:
    """One DataValue as the kernel's raw value, with the status code's quality."""
    status = dv.StatusCode
    code = status.value if status is not None else 0
    variant = dv.Value
    value: Any = variant.Value if variant is not None else None
    if code & _SEVERITY == 0:
        if type(value) in _PLAIN:  # the common case, kept cheap
            return value  # type: ignore[no-any-return]  # asyncua types Variant.Value as Any; type() checked it
        return scalar(value)
    if code & _BAD:
        return fault(code)
    converted = scalar(value)
    if isinstance(converted, PointFault):
        return converted
    return Qualified(converted, Quality.UNCERTAIN, status_name(code))


def scalar(value: Any) -> Scalar | PointFault | None:
    """A value of any built-in type as a kernel scalar, or a fault naming the type it cannot carry."""
    if value is None or isinstance(value, bool | int | float | str):
        if isinstance(value, enum.Enum):
            return int(value.value) if isinstance(value.value, int) else str(value.name)
        return value
    if isinstance(value, datetime.datetime):
        moment: datetime.datetime = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        return moment.isoformat().replace("+00:00", "Z")
    if isinstance(value, LocalizedText):
        return str(value.Text) if value.Text is not None else None
    if isinstance(value, NodeId | QualifiedName):
        return value.to_string()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return PointFault("array values are not supported")
    return PointFault(f"{type(value).__name__} values are not supported")


def epoch(moment: datetime.datetime | None) -> float | None:
    """Epoch seconds of an OPC UA timestamp (asyncua gives aware UTC datetimes; naive ones are UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


# ---- writes ---------------------------------------------------------------------------------------------

_INT_RANGES: dict[VariantType, tuple[int, int]] = {
    VariantType.SByte: (-(2**7), 2**7 - 1),
    VariantType.Byte: (0, 2**8 - 1),
    VariantType.Int16: (-(2**15), 2**15 - 1),
    VariantType.UInt16: (0, 2**16 - 1),
    VariantType.Int32: (-(2**31), 2**31 - 1),
    VariantType.UInt32: (0, 2**32 - 1),
    VariantType.Int64: (-(2**63), 2**63 - 1),
    VariantType.UInt64: (0, 2**64 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38


def raw_range(data_type: str) -> tuple[float, float] | None:
    """The numbers a node of this data type holds (what `to_variant` accepts); None for non-numbers."""
    vt = variant_type(data_type)
    if vt in _INT_RANGES:
        return _INT_RANGES[vt]
    if vt is VariantType.Float:
        return (-_FLOAT32_MAX, _FLOAT32_MAX)
    if vt is VariantType.Double:
        return (-sys.float_info.max, sys.float_info.max)
    return None


def variant_type(name: str) -> VariantType:
    return VariantType[name]


def to_variant(value: Scalar, vt: VariantType) -> Variant:
    """`value` typed as the node's data type; raises ValueError saying why it does not fit."""
    if vt in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{vt.name} needs a whole number, not {value!r}")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{vt.name} needs a whole number, not {value!r}")
            value = int(value)
        low, high = _INT_RANGES[vt]
        if not low <= value <= high:
            raise ValueError(f"{value} is outside the {vt.name} range {low}..{high}")
        return Variant(value, vt)
    if vt in (VariantType.Float, VariantType.Double):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{vt.name} needs a number, not {value!r}")
        number = float(value)
        if vt is VariantType.Float and math.isfinite(number) and abs(number) > _FLOAT32_MAX:
            raise ValueError(f"{value} is outside the Float range")
        return Variant(number, vt)
    if vt is VariantType.Boolean:
        if isinstance(value, bool):
            return Variant(value, vt)
        if isinstance(value, int | float) and value in (0, 1):
            return Variant(bool(value), vt)
        raise ValueError(f"Boolean needs true or false, not {value!r}")
    if vt is VariantType.String:
        if not isinstance(value, str):
            raise ValueError(f"String needs text, not {value!r}")
        return Variant(value, vt)
    if vt is VariantType.DateTime:
        if not isinstance(value, str):
            raise ValueError("DateTime needs an ISO 8601 string")
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an ISO 8601 date and time") from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return Variant(moment, vt)
    raise ValueError(f"writing {vt.name} values is not supported")
