"""The simulator's address space, written out: one object per lift with these variables (see the package doc)."""

from __future__ import annotations

from asyncua import ua

from simulators.opcua_lift.model import RATED_LOAD_KG

NAMESPACE_URI = "urn:edge-gw:sim:lift"
APPLICATION_URI = "urn:edge-gw:sim:lift-server"
PRODUCT_URI = "urn:edge-gw:sim:lift-controller"
CEFACT_URI = "http://www.opcfoundation.org/UA/units/un/cefact"

# UNECE Rec. 20 common codes, as OPC UA's EUInformation carries them (Part 8 §5.6.3).
UNITS: dict[str, tuple[str, str]] = {
    "CarLoad": ("KGM", "kg"),
    "RunHours": ("HUR", "h"),
    "Position": ("MTR", "m"),
    "Speed": ("MTS", "m/s"),
    "MotorTemperature": ("CEL", "°C"),
}
RANGES: dict[str, tuple[float, float]] = {
    "CarLoad": (0.0, RATED_LOAD_KG),
    "Speed": (0.0, 5.0),
    "MotorTemperature": (-20.0, 120.0),
}
# (name, variant type, writable)
VARIABLES: tuple[tuple[str, ua.VariantType, bool], ...] = (
    ("CurrentFloor", ua.VariantType.Int16, False),
    ("Direction", ua.VariantType.String, False),
    ("DoorOpen", ua.VariantType.Boolean, False),
    ("CarLoad", ua.VariantType.Double, False),
    ("TripCounter", ua.VariantType.UInt32, False),
    ("RunHours", ua.VariantType.Double, False),
    ("Position", ua.VariantType.Double, False),
    ("Speed", ua.VariantType.Double, False),
    ("MotorTemperature", ua.VariantType.Double, False),
    ("FaultCode", ua.VariantType.UInt16, True),
    ("InService", ua.VariantType.Boolean, True),
    ("TargetFloor", ua.VariantType.Int16, True),
)
TYPES = {name: vt for name, vt, _ in VARIABLES}


def unit_id(common_code: str) -> int:
    """OPC UA UnitId of a UNECE common code: its (up to 3) ASCII characters packed big-endian."""
    value = 0
    for char in common_code[:3]:
        value = (value << 8) | ord(char)
    return value


def describe(name: str) -> str:
    return {
        "CurrentFloor": "Floor the car is at or nearest to",
        "Direction": "Travel direction: up, down or idle",
        "DoorOpen": "Doors not fully closed",
        "CarLoad": "Load in the car",
        "TripCounter": "Completed trips",
        "RunHours": "Motor running time",
        "Position": "Car height above the lowest floor",
        "Speed": "Car speed",
        "MotorTemperature": "Hoist motor temperature",
        "FaultCode": "0 none, 31 stuck between floors, 42 door fault; write 0 to reset",
        "InService": "Lift available for trips; write false to park it",
        "TargetFloor": "Destination floor; write to request a trip",
    }[name]
