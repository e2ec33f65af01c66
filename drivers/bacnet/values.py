"""Turning bacpypes3 values into the gateway's raw values and back, and BACnet status into quality.

Pure functions; the session calls them on every response.

- REAL arrives as float32 widened to a double (21.94 -> 21.940000534...). It is returned as the shortest
  decimal that maps back to the same float32 (21.94): that is the value the device holds.
- Binary present values become `True` (active) / `False` (inactive), or the point's state text.
- Multi-state present values stay the state number (1..N), or become the point's state text.
- Other enumerations become their standard name ("no-fault-detected"), bit strings the names of the set bits.

Quality from Status_Flags and Reliability (the mapping `qualify` implements, worst wins):

| device says                                   | quality   | value     | reason                         |
|-----------------------------------------------|-----------|-----------|--------------------------------|
| FAULT flag, or Reliability other than no-fault | bad      | null      | "fault (reliability: open-loop)" |
| OUT_OF_SERVICE                                | uncertain | kept      | "out of service"               |
| OVERRIDDEN                                    | good      | kept      | "overridden"                   |
| IN_ALARM                                      | good      | kept      | "in alarm"                     |
"""

from __future__ import annotations

import struct
from typing import Any

from bacpypes3.apdu import AbortPDU, ErrorPDU, ErrorRejectAbortNack, RejectPDU
from bacpypes3.basetypes import BinaryPV, ErrorType, PriorityValue
from bacpypes3.constructeddata import Array
from bacpypes3.primitivedata import (
    BitString,
    Boolean,
    CharacterString,
    Double,
    Enumerated,
    Null,
    ObjectIdentifier,
    Real,
    Unsigned,
)
from bacpypes3.vendor import get_vendor_info

from drivers.bacnet.config import BacnetPoint
from drivers.bacnet.plan import Target
from edge.sdk import PointFault, Qualified, Quality, RawValue, Scalar

_NO_FAULT = "no-fault-detected"
_ASHRAE = get_vendor_info(0)
_FLOAT32 = struct.Struct("<f")


def tidy_real(value: float) -> float:
    """The shortest decimal that is the same float32 (REAL values are single precision on the wire)."""
    packed = _FLOAT32.pack(value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if _FLOAT32.pack(candidate) == packed:
            return candidate
    return value


def error_reason(error: Any) -> str:
    """'bacnet error object: unknown-object', 'bacnet reject: unrecognized-service', 'bacnet abort: ...'."""
    if isinstance(error, ErrorPDU | ErrorType):
        return f"bacnet error {error.errorClass}: {error.errorCode}"
    if isinstance(error, RejectPDU):
        return f"bacnet reject: {error.apduAbortRejectReason}"
    if isinstance(error, AbortPDU):
        return f"bacnet abort: {error.apduAbortRejectReason}"
    if isinstance(error, ErrorRejectAbortNack):
        return f"bacnet {type(error).__name__}"
    return str(error)


def scalar(value: Any) -> Scalar | PointFault | None:
    """A bacpypes3 primitive as a plain Python scalar (no point context)."""
    if isinstance(value, ErrorType):
        return PointFault(error_reason(value))
    if isinstance(value, PointFault):
        return value
    if isinstance(value, PriorityValue):  # one slot of a priority array: its value, or None when empty
        choice = value._choice
        return None if choice in (None, "null") else scalar(getattr(value, choice))
    if value is None or isinstance(value, Null):
        return None
    if isinstance(value, Double):  # before Real: bacpypes3's Double subclasses Real, and is 64-bit
        return float(value)
    if isinstance(value, Real):
        return tidy_real(value)
    if isinstance(value, Boolean):
        return bool(value)
    if isinstance(value, BinaryPV):
        return int(value) == 1
    if isinstance(value, Enumerated):
        return str(value)
    if isinstance(value, Unsigned) or (isinstance(value, int) and not isinstance(value, bool)):
        return int(value)
    if isinstance(value, CharacterString):
        return str(value)
    if isinstance(value, BitString):
        return ",".join(_bit_names(value))
    if isinstance(value, ObjectIdentifier):
        return f"{value[0]},{value[1]}"
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):  # bacpypes3 answers "-no object class-" for what it cannot decode
        return PointFault(f"cannot decode the value ({value.strip('-')})")
    return PointFault(f"unsupported data type {type(value).__name__}")


def decode(value: Any, target: Target) -> RawValue:
    """One point's raw value from what the device answered."""
    if isinstance(value, BaseException):
        return PointFault(error_reason(value))
    raw = scalar(value)
    if raw is None or isinstance(raw, PointFault) or target.states is None:
        return raw
    if target.kind == "binary" and isinstance(raw, bool):
        return target.states[1] if raw else target.states[0]
    if target.kind == "multistate" and isinstance(raw, int):
        if 1 <= raw <= len(target.states):
            return target.states[raw - 1]
        return Qualified(raw, Quality.UNCERTAIN, f"state {raw} has no text (1..{len(target.states)})")
    return raw


def status_flags(value: Any) -> tuple[int, ...] | None:
    """The four Status_Flags bits, or None when the device did not give them."""
    if isinstance(value, BitString) and len(value) >= 4:
        return tuple(int(bit) for bit in value[:4])
    return None


def qualify(raw: RawValue, flags: tuple[int, ...] | None, reliability: str | None = None) -> RawValue:
    """Apply Status_Flags and Reliability to a value (see the table in the module docstring)."""
    if isinstance(raw, PointFault) or (flags is None and reliability in (None, _NO_FAULT)):
        return raw
    in_alarm, fault, overridden, out_of_service = flags or (0, 0, 0, 0)
    value = raw.value if isinstance(raw, Qualified) else raw
    if fault or reliability not in (None, _NO_FAULT):
        detail = f" (reliability: {reliability})" if reliability not in (None, _NO_FAULT) else ""
        return Qualified(None, Quality.BAD, f"fault{detail}")
    reasons = [
        r
        for r, on in (("out of service", out_of_service), ("overridden", overridden), ("in alarm", in_alarm))
        if on
    ]
    if isinstance(raw, Qualified):
        reasons.insert(0, raw.reason)
    if not reasons:
        return raw
    quality = Quality.UNCERTAIN if out_of_service or isinstance(raw, Qualified) else Quality.GOOD
    return Qualified(value, quality, ", ".join(reasons))


def decode_notification(object_type: Any, property_value: Any) -> tuple[int, Any]:
    """(property number, decoded value) of one `PropertyValue` of a COV notification."""
    prop = property_value.propertyIdentifier
    object_class = _ASHRAE.get_object_class(object_type)
    kind = object_class.get_property_type(prop) if object_class else None
    if kind is None:
        return int(prop), f"-no property type {prop}-"
    if issubclass(kind, Array) and property_value.propertyArrayIndex is not None:
        kind = Unsigned if property_value.propertyArrayIndex == 0 else kind._subtype
    return int(prop), property_value.value.cast_out(kind)


_REAL_MAX = 3.4028234663852886e38  # a BACnet Real is an IEEE 754 single


def raw_range(point: BacnetPoint) -> tuple[float, float] | None:
    """The numbers `encode_write` can send to the point: a Real for an analog present value, a state number
    1..N for a multi-state one; None for the others (binary, other properties)."""
    if point.kind == "analog":
        return (-_REAL_MAX, _REAL_MAX)
    if point.kind == "multistate":
        return (1, len(point.states) if point.states else 2**32 - 1)
    return None


def encode_write(point: BacnetPoint, raw: Scalar | None) -> tuple[Any, int | None]:
    """(value for bacpypes3's write_property, priority). Raises ValueError for a value the point cannot take.

    `None` relinquishes the point's priority slot (writes Null). The priority is sent only for a present
    value; bacpypes3 casts numbers and names to the property's datatype.
    """
    priority = point.priority if point.is_present_value else None
    if raw is None:
        if priority is None:
            raise ValueError("only a present value can be relinquished")
        return Null(()), priority
    kind = point.kind
    if kind == "binary":
        return BinaryPV(_binary(point, raw)), priority
    if kind == "multistate":
        return Unsigned(_state(point, raw)), priority
    if kind == "analog":
        if isinstance(raw, bool | str):
            raise ValueError(f"an analog value needs a number, not {raw!r}")
        return Real(float(raw)), priority
    return raw, priority


def _binary(point: BacnetPoint, raw: Scalar) -> str:
    if isinstance(raw, bool):
        return "active" if raw else "inactive"
    if isinstance(raw, int) and raw in (0, 1):
        return "active" if raw else "inactive"
    if isinstance(raw, str):
        if point.states and raw in point.states:
            return "active" if point.states.index(raw) == 1 else "inactive"
        if raw in ("active", "inactive"):
            return raw
    texts = f" or one of {list(point.states)}" if point.states else ""
    raise ValueError(f"a binary value takes true/false, 0/1, 'active'/'inactive'{texts}; not {raw!r}")


def _state(point: BacnetPoint, raw: Scalar) -> int:
    if isinstance(raw, str) and point.states and raw in point.states:
        return point.states.index(raw) + 1
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        if point.states and raw > len(point.states):
            raise ValueError(f"state {raw} is outside 1..{len(point.states)}")
        return raw
    if isinstance(raw, float) and raw.is_integer() and raw >= 1:
        return _state(point, int(raw))
    texts = f" or one of {list(point.states)}" if point.states else ""
    raise ValueError(f"a multi-state value takes a state number 1..N{texts}; not {raw!r}")


def _bit_names(bits: BitString) -> list[str]:
    names: dict[str, int] = getattr(type(bits), "_bitstring_names", None) or {}
    by_position = {position: name for name, position in names.items()}
    return [by_position.get(i, str(i)) for i, bit in enumerate(bits) if bit]
