"""`edge device discover opcua`: browse a server from a start node and propose a point map.

Target keys: `url` (required); `node` (start node id, default the Objects folder `i=85`); `depth` (levels below
the start node, default 4); `max_variables` (default 2000); `include_standard` (also walk namespace-0 nodes such
as the Server object, default false); `timeout` (seconds per request, default 5); and any connection key of
`OpcuaConnection` (`security`, `mode`, `certificate`, `private_key`, `trusted_server_certificates`, `username`,
`password`, ...), so discovery is as secure as the device will be.

The walk follows hierarchical references forwards, one Browse call per level. Variables reached by
HasProperty (EngineeringUnits, EURange...) describe their parent and are not proposed as points. For each
variable one Read call fetches DataType, ValueRank, UserAccessLevel and Description, and one more the
EngineeringUnits. Proposed points use the namespace URI form of node ids (`nsu=...;s=...`), which survives a
server restart that renumbers namespaces, and names made from the browse path below the start node.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from pydantic import ValidationError

from drivers.opcua.config import OpcuaConnection, WriteType, parse_node_id
from drivers.opcua.connect import close_client, open_client, quiet_asyncua_logging
from drivers.opcua.plan import make_node_id
from drivers.opcua.values import is_good, scalar
from edge.sdk import DiscoveredDevice

CEFACT_URI = "http://www.opcfoundation.org/UA/units/un/cefact"
# UNECE Rec. 20 common codes → the gateway's unit symbols (UCUM-style, as the shipped profiles use them).
UNECE_UNITS: dict[str, str] = {
    "CEL": "Cel",
    "FAH": "[degF]",
    "KEL": "K",
    "P1": "%",
    "MTR": "m",
    "MMT": "mm",
    "CMT": "cm",
    "KMT": "km",
    "KGM": "kg",
    "GRM": "g",
    "TNE": "t",
    "HUR": "h",
    "MIN": "min",
    "SEC": "s",
    "C26": "ms",
    "MTS": "m/s",
    "KMH": "km/h",
    "AMP": "A",
    "VLT": "V",
    "WTT": "W",
    "KWT": "kW",
    "MAW": "MW",
    "WHR": "Wh",
    "KWH": "kWh",
    "MWH": "MWh",
    "HTZ": "Hz",
    "PAL": "Pa",
    "KPA": "kPa",
    "BAR": "bar",
    "MBR": "mbar",
    "LTR": "L",
    "MTQ": "m3",
    "MQH": "m3/h",
    "L2": "L/min",
    "NEU": "N",
    "RPM": "rpm",
}
_BUILTIN_NAMES = {vt.value: vt.name for vt in ua.VariantType if 1 <= vt.value <= 25}
_WRITABLE_TYPES = frozenset(get_args(WriteType))  # the types a point can be written as
_HAS_PROPERTY = make_node_id(ObjectIds.HasProperty, 0)
_NAME_PART = re.compile(r"[^A-Za-z0-9_-]+")


def unit_code(unit_id: int) -> str:
    """The UNECE common code packed in an EUInformation UnitId ('CEL' from 4408652)."""
    chars = []
    while unit_id:
        chars.append(chr(unit_id & 0xFF))
        unit_id >>= 8
    return "".join(reversed(chars))


def unit_symbol(eu: Any) -> str | None:
    """The gateway unit for an EUInformation: the UNECE code mapped, else its display name."""
    if not isinstance(eu, ua.EUInformation):
        return None
    if eu.NamespaceUri == CEFACT_URI and eu.UnitId > 0:
        symbol = UNECE_UNITS.get(unit_code(eu.UnitId))
        if symbol:
            return symbol
    text = eu.DisplayName.Text if eu.DisplayName is not None else None
    return text or None


@dataclass
class _Variable:
    node_id: ua.NodeId
    path: list[str]  # browse names below the start node
    properties: dict[str, ua.NodeId] = field(default_factory=dict)


async def discover(target: dict[str, Any], progress: Callable[[str], None]) -> list[DiscoveredDevice]:
    """One `DiscoveredDevice` (the server) with the variables below the start node as proposed points."""
    quiet_asyncua_logging()
    options = {k: v for k, v in target.items() if k in OpcuaConnection.model_fields}
    try:
        conn = OpcuaConnection.model_validate(options)
    except ValidationError as exc:
        raise ValueError(f"discovery target: {exc.errors()[0]['msg']}") from None
    depth = int(target.get("depth", 4))
    limit = int(target.get("max_variables", 2000))
    include_standard = bool(target.get("include_standard", False))
    start_text = str(target.get("node") or "i=85")
    parse_node_id(start_text)  # ValueError names the bad id
    client = await open_client(conn, device=conn.url, request_timeout=float(target.get("timeout", 5.0)))
    progress(f"connected to {conn.url} (security {conn.security})")
    try:
        namespaces = await client.get_namespace_array()
        start = _resolve(parse_node_id(start_text), namespaces)
        variables, browsed = await _walk(client, start, depth, limit, include_standard)
        progress(f"browsed {browsed} nodes below {start_text}: {len(variables)} variables")
        points, skipped = await _describe(client, variables, namespaces)
        if skipped:
            progress(f"{skipped} array or structured variables left out (the driver reads scalars)")
        identity = await _identity(client)
    finally:
        await close_client(client)
    connection = _connection_table(target, conn)
    name = identity.get("product_name") or "opcua-server"
    suffix = "" if start_text == "i=85" else f"-{_slug(start_text.split('=')[-1])}"
    return [
        DiscoveredDevice(
            address=conn.url,
            identity=identity,
            connection=connection,
            points=points,
            profile_name=f"{_slug(name)}{suffix}",
        )
    ]


def _resolve(node_id: ua.NodeId, namespaces: list[str]) -> ua.NodeId:
    uri = getattr(node_id, "NamespaceUri", None)
    if not uri:
        return make_node_id(node_id.Identifier, node_id.NamespaceIndex, node_id.NodeIdType)
    if uri not in namespaces:
        raise ValueError(f"namespace {uri} is not on the server")
    return make_node_id(node_id.Identifier, namespaces.index(uri), node_id.NodeIdType)


async def _walk(
    client: Client, start: ua.NodeId, depth: int, limit: int, include_standard: bool
) -> tuple[list[_Variable], int]:
    """Breadth-first over hierarchical references, one Browse call per level."""
    variables: list[_Variable] = []
    by_node: dict[ua.NodeId, _Variable] = {}
    seen = {start}
    level: list[tuple[ua.NodeId, list[str]]] = [(start, [])]
    browsed = 0
    for _ in range(depth + 1):  # +1: the properties of the deepest variables
        if not level or len(variables) >= limit:
            break
        results = await _browse(client, [n for n, _ in level])
        following: list[tuple[ua.NodeId, list[str]]] = []
        for (parent, path), refs in zip(level, results, strict=True):
            for ref in refs:
                target = ref.NodeId
                node_id = make_node_id(target.Identifier, target.NamespaceIndex, target.NodeIdType)
                if node_id in seen or (node_id.NamespaceIndex == 0 and not include_standard):
                    continue
                seen.add(node_id)
                browsed += 1
                name = ref.BrowseName.Name or str(node_id.Identifier)
                if ref.ReferenceTypeId == _HAS_PROPERTY and parent in by_node:
                    by_node[parent].properties[name] = node_id
                    continue
                if ref.NodeClass == ua.NodeClass.Variable and len(variables) < limit:
                    variable = _Variable(node_id, [*path, name])
                    variables.append(variable)
                    by_node[node_id] = variable
                following.append((node_id, [*path, name]))
        level = following
    return variables, browsed


async def _browse(client: Client, nodes: list[ua.NodeId]) -> list[list[ua.ReferenceDescription]]:
    descriptions = [
        ua.BrowseDescription(
            NodeId=n,
            BrowseDirection=ua.BrowseDirection.Forward,
            ReferenceTypeId=make_node_id(ObjectIds.HierarchicalReferences, 0),
            IncludeSubtypes=True,
            NodeClassMask=ua.NodeClass.Object | ua.NodeClass.Variable,
            ResultMask=ua.BrowseResultMask.All,
        )
        for n in nodes
    ]
    results = await client.uaclient.browse(ua.BrowseParameters(NodesToBrowse=descriptions))
    out: list[list[ua.ReferenceDescription]] = []
    for result in results:
        refs = list(result.References)
        continuation = result.ContinuationPoint
        for _ in range(100):  # a server pages long reference lists; bounded
            if not continuation:
                break
            more = await client.uaclient.browse_next(
                ua.BrowseNextParameters(ReleaseContinuationPoints=False, ContinuationPoints=[continuation])
            )
            refs += more[0].References
            continuation = more[0].ContinuationPoint
        out.append(refs)
    return out


async def _describe(
    client: Client, variables: list[_Variable], namespaces: list[str]
) -> tuple[list[dict[str, Any]], int]:
    """Proposed points, and how many variables were left out (arrays, structures)."""
    attributes = (
        AttributeIds.DataType,
        AttributeIds.ValueRank,
        AttributeIds.UserAccessLevel,
        AttributeIds.Description,
    )
    reads = [ua.ReadValueId(NodeId=v.node_id, AttributeId=a) for v in variables for a in attributes]
    units = [
        (i, v.properties["EngineeringUnits"])
        for i, v in enumerate(variables)
        if "EngineeringUnits" in v.properties
    ]
    reads += [ua.ReadValueId(NodeId=n, AttributeId=AttributeIds.Value) for _, n in units]
    values = await client.uaclient.read(ua.ReadParameters(NodesToRead=reads)) if reads else []
    unit_of = {i: unit_symbol(_value(values[len(variables) * 4 + k])) for k, (i, _) in enumerate(units)}
    type_names = await _type_names(client, [_value(values[i * 4]) for i in range(len(variables))])
    points: list[dict[str, Any]] = []
    names: set[str] = set()
    skipped = 0
    for i, variable in enumerate(variables):
        datatype, rank, access, description = (_value(values[i * 4 + k]) for k in range(4))
        type_name = type_names.get(_key(datatype), "BaseDataType")
        if (isinstance(rank, int) and rank >= 0) or type_name in ("ExtensionObject", "Structure"):
            skipped += 1
            continue
        writable = isinstance(access, int) and bool(access & ua.AccessLevel.CurrentWrite.mask)
        readable = not isinstance(access, int) or bool(access & ua.AccessLevel.CurrentRead.mask)
        point: dict[str, Any] = {
            "name": _unique(_point_name(variable.path), names),
            "node": _node_text(variable.node_id, namespaces),
        }
        unit = unit_of.get(i)
        if unit:
            point["unit"] = unit
        if writable:
            point["writable"] = True
            if type_name in _WRITABLE_TYPES:
                point["data_type"] = type_name
        access_text = "read-write" if writable and readable else ("write-only" if writable else "read-only")
        text = scalar(description)
        summary = f"{'/'.join(variable.path)}: {type_name}, {access_text}"
        point["description"] = f"{summary}. {text}" if isinstance(text, str) and text else summary
        points.append(point)
    return points, skipped


async def _type_names(client: Client, datatypes: list[Any]) -> dict[Any, str]:
    """DataType node → name: built-in types by number, others by their BrowseName (one Read call)."""
    names: dict[Any, str] = {}
    others: list[ua.NodeId] = []
    for dt in datatypes:
        if not isinstance(dt, ua.NodeId):
            continue
        if dt.NamespaceIndex == 0 and isinstance(dt.Identifier, int) and dt.Identifier in _BUILTIN_NAMES:
            names[_key(dt)] = _BUILTIN_NAMES[dt.Identifier]
        elif _key(dt) not in names:
            names[_key(dt)] = "BaseDataType"
            others.append(dt)
    if others:
        params = ua.ReadParameters(
            NodesToRead=[ua.ReadValueId(NodeId=n, AttributeId=AttributeIds.BrowseName) for n in others]
        )
        for dt, dv in zip(others, await client.uaclient.read(params), strict=True):
            browse_name = _value(dv)
            if isinstance(browse_name, ua.QualifiedName) and browse_name.Name:
                names[_key(dt)] = browse_name.Name
    return names


async def _identity(client: Client) -> dict[str, str]:
    fields = {
        "server_uri": ObjectIds.Server_ServerArray,
        "product_name": ObjectIds.Server_ServerStatus_BuildInfo_ProductName,
        "product_uri": ObjectIds.Server_ServerStatus_BuildInfo_ProductUri,
        "manufacturer": ObjectIds.Server_ServerStatus_BuildInfo_ManufacturerName,
        "software_version": ObjectIds.Server_ServerStatus_BuildInfo_SoftwareVersion,
    }
    params = ua.ReadParameters(
        NodesToRead=[
            ua.ReadValueId(NodeId=make_node_id(i, 0), AttributeId=AttributeIds.Value) for i in fields.values()
        ]
    )
    identity: dict[str, str] = {}
    for key, dv in zip(fields, await client.uaclient.read(params), strict=True):
        value = _value(dv)
        if isinstance(value, list):
            value = value[0] if value else None
        if value:
            identity[key] = str(value)
    return identity


def _connection_table(target: dict[str, Any], conn: OpcuaConnection) -> dict[str, Any]:
    """The device's [devices.connection] table: what was given, with paths as text and no literal password."""
    table: dict[str, Any] = {"url": conn.url, "security": conn.security}
    for key in (
        "mode",
        "certificate",
        "private_key",
        "application_uri",
        "username",
        "user_certificate",
        "user_private_key",
    ):
        if target.get(key) is not None:
            table[key] = str(target[key])
    if target.get("trusted_server_certificates"):
        table["trusted_server_certificates"] = [str(p) for p in target["trusted_server_certificates"]]
    for key in ("password", "private_key_password"):
        value = target.get(key)
        if isinstance(value, str) and value.startswith("env:"):
            table[key] = value  # a reference, not the secret
    return table


def _value(dv: ua.DataValue) -> Any:
    if dv.StatusCode is not None and not is_good(dv.StatusCode.value):
        return None
    return dv.Value.Value if dv.Value is not None else None


def _key(node_id: Any) -> Any:
    return (node_id.NamespaceIndex, node_id.Identifier) if isinstance(node_id, ua.NodeId) else None


def _node_text(node_id: ua.NodeId, namespaces: list[str]) -> str:
    """'nsu=<uri>;s=Lift1.CurrentFloor' (or 'i=2258' in namespace 0)."""
    plain = make_node_id(node_id.Identifier, 0, node_id.NodeIdType).to_string()
    if node_id.NamespaceIndex == 0 or node_id.NamespaceIndex >= len(namespaces):
        return node_id.to_string()
    return f"nsu={namespaces[node_id.NamespaceIndex]};{plain}"


def _point_name(path: list[str]) -> str:
    """'Lifts.Lift1.CurrentFloor': browse names joined by dots, each cleaned to [A-Za-z0-9_-]."""
    parts = [_NAME_PART.sub("_", p).strip("_") or "x" for p in path]
    name = ".".join(parts)
    if not name[0].isalnum():
        name = "p" + name
    if len(name) > 64:  # keep the end (most specific), mark the cut with a checksum of the whole
        tag = f"{zlib.crc32(name.encode()):08x}"
        name = f"{tag}.{name[-(64 - len(tag) - 1) :].lstrip('.')}"
    return name


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        suffix = f"_{n}"
        candidate = name[: 64 - len(suffix)] + suffix
        n += 1
    taken.add(candidate)
    return candidate


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "opcua"
