"""Configuration models of the BACnet/IP driver: one device connection and one point.

Validated once, when the gateway starts. Names of object types, properties and the addresses are checked
here, without any network I/O (no DNS: BACnet/IP devices are addressed by IPv4 literal).
"""

from __future__ import annotations

import builtins
import ipaddress
import re
from typing import Literal, Self

from bacpypes3.primitivedata import ObjectType, PropertyIdentifier
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.sdk import PointConfig, ValueKind

MAX_INSTANCE = 4_194_302  # 4194303 is the "any device" wildcard
DEFAULT_PORT = 47808

ANALOG_TYPES = frozenset({"analog-input", "analog-output", "analog-value", "large-analog-value"})
BINARY_TYPES = frozenset({"binary-input", "binary-output", "binary-value", "binary-lighting-output"})
MULTISTATE_TYPES = frozenset({"multi-state-input", "multi-state-output", "multi-state-value"})
# Objects with Status_Flags whose Present_Value a COV subscription reports (Clause 13.1, Table 13-1).
COV_TYPES = (
    ANALOG_TYPES
    | BINARY_TYPES
    | MULTISTATE_TYPES
    | frozenset({"integer-value", "positive-integer-value", "accumulator", "pulse-converter", "loop"})
)
# Commandable without question: outputs always have a priority array (values may, see the device).
OUTPUT_TYPES = frozenset({"analog-output", "binary-output", "multi-state-output", "binary-lighting-output"})
INPUT_TYPES = frozenset({"analog-input", "binary-input", "multi-state-input"})

_ADDRESS = re.compile(r"^(?P<ip>\d{1,3}(?:\.\d{1,3}){3})(?:/(?P<mask>\d{1,2}))?(?::(?P<port>\d{1,5}))?$")


def parse_address(text: str, *, allow_mask: bool) -> tuple[str, int | None, int]:
    """'192.168.1.20', '127.0.0.1:47818' or (local side) '127.0.0.1/8:47809' -> (ip, mask, port)."""
    match = _ADDRESS.match(text.strip())
    if match is None:
        form = "IPv4[/mask][:port]" if allow_mask else "IPv4[:port]"
        raise ValueError(f"{text!r} is not an {form} address (host names are not resolved)")
    ip = str(ipaddress.IPv4Address(match["ip"]))  # raises ValueError on 300.1.2.3
    mask = int(match["mask"]) if match["mask"] else None
    if mask is not None and (not allow_mask or not 0 <= mask <= 32):
        raise ValueError(f"{text!r}: a mask is only for the local address, 0..32")
    port = int(match["port"]) if match["port"] else DEFAULT_PORT
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port must be 1..65535")
    return ip, mask, port


def mac_bytes(text: str) -> bytes:
    """'10' (decimal, 0..255), '0x0a', '0a:0b' or '0x7f000001bac0' -> the MAC's bytes; raises ValueError."""
    cleaned = text.strip().lower().replace(":", "").replace("-", "")
    try:
        if cleaned.startswith("0x"):
            raw = bytes.fromhex(cleaned[2:])
        elif cleaned.isdigit() and ":" not in text:
            number = int(cleaned)
            if not 0 <= number <= 255:
                raise ValueError
            raw = bytes([number])
        else:
            raw = bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"{text!r} is not a MAC address ('10', '0x0a' or hex bytes)") from None
    if not 1 <= len(raw) <= 18:
        raise ValueError(f"{text!r}: a BACnet MAC address is 1 to 18 bytes")
    return raw


def canonical_object_type(name: str | int) -> str:
    """'analogInput', 'analog-input' or 0 -> 'analog-input'; raises ValueError for unknown types."""
    try:
        return str(ObjectType(name))
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"unknown BACnet object type {name!r} (e.g. 'analog-input')") from None


def canonical_property(name: str) -> str:
    """'presentValue', 'present-value' or '85' -> 'present-value'; proprietary numbers stay numbers."""
    try:
        prop = PropertyIdentifier(int(name)) if name.isdigit() else PropertyIdentifier(name)
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"unknown BACnet property {name!r} (e.g. 'present-value')") from None
    text = str(prop)
    return text if not text.isdigit() else str(int(text))


class BacnetConnection(BaseModel):
    """How to reach one BACnet device, and how the gateway's own BACnet/IP side is set up.

    A device on the gateway's IP network: `address`. A device behind a BACnet router (an MS/TP trunk, another
    IP network): its `network` number and `mac` there, and optionally the `router`'s IP address (else the
    router is found by a Who-Is-Router-To-Network broadcast). `bbmd`: the gateway's stack registers as a
    foreign device with that BBMD, renewing the registration every `bbmd_ttl` seconds (for sites whose
    networks are joined by BBMDs, when the gateway sits on another subnet)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str | None = Field(
        default=None, description="Device address: '192.168.1.20' (port 47808) or '127.0.0.2:47818'."
    )
    network: int | None = Field(
        default=None, ge=1, le=65534, description="Routed device: its BACnet network number (DNET)."
    )
    mac: str | None = Field(
        default=None,
        description="Routed device: its MAC address on that network: '10' or '0x0a' (MS/TP), "
        "'0x7f000001bac0' (6 bytes: a BACnet/IP device behind a router).",
    )
    router: str | None = Field(
        default=None, description="Routed device: the router's IPv4[:port]; None: found by broadcast."
    )
    bbmd: str | None = Field(
        default=None, description="Register the gateway as a foreign device with this BBMD (IPv4[:port])."
    )
    bbmd_ttl: int = Field(
        default=300, ge=5, le=65535, description="Foreign device registration time to live, seconds."
    )
    device_instance: int | None = Field(
        default=None,
        ge=0,
        le=MAX_INSTANCE,
        description="The device object's instance; checked at connect. None: learned by a unicast Who-Is.",
    )
    local_address: str = Field(
        default="0.0.0.0:47808",
        description="The gateway's own BACnet/IP address (ip[/mask][:port]); devices sharing it share one socket.",
    )
    local_device_instance: int = Field(default=MAX_INSTANCE, ge=0, le=MAX_INSTANCE)
    retries: int = Field(default=1, ge=0, le=5, description="Resends after an unanswered request.")
    read_method: Literal["auto", "rpm", "rp"] = Field(
        default="auto",
        description="'auto': ReadPropertyMultiple, falling back to ReadProperty once if the device refuses it.",
    )
    max_objects_per_request: int = Field(default=16, ge=1, le=200)
    cov: bool = Field(default=True, description="Subscribe to changes of value where the device offers it.")
    cov_lifetime: int = Field(default=300, ge=2, le=86_400, description="Seconds; renewed at half of it.")
    cov_confirmed: bool = Field(default=False, description="Ask for confirmed COV notifications.")
    check_interval: float = Field(
        default=30.0, gt=0.0, le=3600.0, description="While on COV: seconds between liveness reads."
    )

    @field_validator("address", "router", "bbmd")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        ip, _, port = parse_address(value, allow_mask=False)
        return f"{ip}:{port}"

    @field_validator("mac", mode="before")
    @classmethod
    def _check_mac(cls, value: object) -> str | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):  # `mac = 10` in TOML, `mac=10` on the CLI
            value = str(value)
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a MAC address ('10', '0x0a' or hex bytes)")
        return f"0x{mac_bytes(value).hex()}"

    @model_validator(mode="after")
    def _check_route(self) -> Self:
        if self.network is None:
            if self.address is None:
                raise ValueError("give the device's `address`, or its `network` and `mac` behind a router")
            if self.mac is not None or self.router is not None:
                raise ValueError("`mac` and `router` are for a routed device: give its `network` too")
        else:
            if self.mac is None:
                raise ValueError(f"a device on network {self.network} needs its `mac` there (MS/TP: '10')")
            if self.address is not None:
                raise ValueError("a routed device has no `address`: the `router` is where requests go")
        return self

    @property
    def target(self) -> str:
        """The device's BACnet address as bacpypes3 reads it: 'ip:port', or 'network:0xmac' when routed."""
        if self.network is not None:
            return f"{self.network}:{self.mac}"
        assert self.address is not None
        return self.address

    @field_validator("local_address")
    @classmethod
    def _check_local(cls, value: str) -> str:
        ip, mask, port = parse_address(value, allow_mask=True)
        return f"{ip}{'' if mask is None else f'/{mask}'}:{port}"


class BacnetPoint(PointConfig):
    """One property (by default the present value) of one BACnet object."""

    object_type: str = Field(description="'analog-input', 'binary-value', 'multi-state-value', ...")
    instance: int = Field(ge=0, le=MAX_INSTANCE)
    property: str = "present-value"
    index: int | None = Field(default=None, ge=0, description="Array index, for array properties.")
    priority: int = Field(default=16, ge=1, le=16, description="Write priority (1 highest, 16 lowest).")
    cov_increment: float | None = Field(
        default=None, gt=0.0, description="Ask for this COV increment (SubscribeCOVProperty) if supported."
    )
    status_flags: bool = Field(default=True, description="Read Status_Flags with the present value.")
    states: tuple[str, ...] | None = Field(
        default=None,
        description="State texts: multi-state values 1..N, binary [inactive, active]. Values become the text.",
    )

    @field_validator("object_type", mode="before")
    @classmethod
    def _check_type(cls, value: object) -> str:
        if not isinstance(value, str | int):
            raise ValueError("object_type must be a BACnet object type name")
        return canonical_object_type(value)

    @field_validator("property", mode="before")
    @classmethod
    def _check_property(cls, value: object) -> str:
        if isinstance(value, int):
            value = str(value)
        if not isinstance(value, str):
            raise ValueError("property must be a BACnet property name")
        return canonical_property(value)

    @builtins.property
    def choices(self) -> tuple[str, ...] | None:
        return self.states

    @builtins.property
    def value_kind(self) -> ValueKind | None:
        kind = self.kind
        if kind == "binary":
            return "text" if self.states else "bool"
        if kind == "multistate":
            return "text" if self.states else "integer" if not self.is_scaled else "number"
        return "number" if kind == "analog" else None  # other properties: their value tells

    @builtins.property  # the field `property` shadows the builtin in this class body
    def is_present_value(self) -> bool:
        return self.property == "present-value" and self.index is None

    @builtins.property
    def kind(self) -> Literal["analog", "binary", "multistate", "other"]:
        if not self.is_present_value:
            return "other"
        if self.object_type in BINARY_TYPES:
            return "binary"
        if self.object_type in MULTISTATE_TYPES:
            return "multistate"
        return "analog" if self.object_type in ANALOG_TYPES else "other"

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.priority == 6:
            raise ValueError("priority 6 is reserved for minimum on/off time (Clause 19.2.1.2)")
        if self.states is not None:
            if self.kind == "binary" and len(self.states) != 2:
                raise ValueError("a binary point's states are exactly [inactive text, active text]")
            if self.kind not in ("binary", "multistate"):
                raise ValueError("states are for the present value of binary and multi-state objects")
            if len(set(self.states)) != len(self.states) or not all(self.states):
                raise ValueError("states must be distinct, non-empty texts")
        if self.cov_increment is not None and self.kind != "analog":
            raise ValueError("cov_increment is for the present value of analog objects")
        scaled = self.scale != 1.0 or self.offset != 0.0
        if scaled and self.kind in ("binary", "multistate"):
            raise ValueError("binary and multi-state values cannot be scaled")
        return self
