"""OPC UA driver plug-in: subscriptions (monitored items) by default, batched reads, typed writes, security.

Public API: `OpcuaDriver` (the entry point object), its models `OpcuaConnection` and `OpcuaPoint`, the
session `OpcuaSession`, the compiled `OpcuaPlan`, `TrustList` for server certificates, and the pure value
helpers `to_raw` (status code → quality) and `to_variant` (typed writes).
"""

from drivers.opcua.certs import TrustList
from drivers.opcua.config import OpcuaConnection, OpcuaPoint
from drivers.opcua.discovery import unit_code, unit_symbol
from drivers.opcua.driver import OpcuaDriver
from drivers.opcua.plan import NodeRef, OpcuaPlan, compile_plan
from drivers.opcua.session import OpcuaSession
from drivers.opcua.values import status_name, to_raw, to_variant

__all__ = [
    "NodeRef",
    "OpcuaConnection",
    "OpcuaDriver",
    "OpcuaPlan",
    "OpcuaPoint",
    "OpcuaSession",
    "TrustList",
    "compile_plan",
    "status_name",
    "to_raw",
    "to_variant",
    "unit_code",
    "unit_symbol",
]
