"""The device's compiled plan: its points in configuration order, each node reference parsed once.

Pure: no I/O. `{name}` placeholders in node ids and browse paths are filled from the connection's
`node_variables`, so one profile can describe every lift of a group controller. Namespace URIs (`nsu=`) and browse paths can only be resolved against a live server, which the
session does once per connection (`session.resolve`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asyncua.ua import NodeId, RelativePath

from drivers.opcua.config import OpcuaPoint, parse_browse_path, parse_node_id


@dataclass(frozen=True, slots=True)
class NodeRef:
    """Where a point lives: a node id (its namespace by index, or by URI), or a browse path from Objects."""

    text: str  # as configured, for messages
    node_id: NodeId | None = None
    namespace_uri: str | None = None  # the node id's namespace index is looked up from this URI
    browse_path: RelativePath | None = None


@dataclass(frozen=True, slots=True)
class OpcuaPlan:
    points: tuple[OpcuaPoint, ...]
    refs: tuple[NodeRef, ...]

    @property
    def needs_resolving(self) -> bool:
        return any(r.namespace_uri is not None or r.browse_path is not None for r in self.refs)


def make_node_id(identifier: Any, namespace: int = 0, kind: Any = None) -> NodeId:
    """`NodeId(identifier, namespace, kind)`: asyncua annotates these with NewTypes; this is the one cast."""
    return NodeId(identifier, namespace, kind)  # type: ignore[arg-type]


def node_ref(point: OpcuaPoint) -> NodeRef:
    """Parse a point's `node` or `browse_path`. Raises ValueError (the models already validated both)."""
    if point.node is not None:
        node_id = parse_node_id(point.node)
        uri = getattr(node_id, "NamespaceUri", None)
        if uri:
            return NodeRef(
                point.node, make_node_id(node_id.Identifier, 0, node_id.NodeIdType), namespace_uri=uri
            )
        return NodeRef(
            point.node, make_node_id(node_id.Identifier, node_id.NamespaceIndex, node_id.NodeIdType)
        )
    assert point.browse_path is not None
    return NodeRef(point.browse_path, browse_path=parse_browse_path(point.browse_path))


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """Fill {name} placeholders from the connection's `node_variables`; a missing one raises ValueError."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise ValueError(f"{text!r} needs node_variables.{name} in the device's connection")
        return variables[name]

    return _PLACEHOLDER.sub(value, text)


def compile_plan(points: tuple[OpcuaPoint, ...], variables: Mapping[str, str] | None = None) -> OpcuaPlan:
    """Points in configuration order with their node references parsed (placeholders filled). Pure."""
    values = variables or {}
    filled: list[OpcuaPoint] = []
    refs: list[NodeRef] = []
    for point in points:
        try:
            changes = {
                key: substitute(text, values)
                for key, text in (("node", point.node), ("browse_path", point.browse_path))
                if text is not None and "{" in text
            }
            if changes:
                point = point.model_copy(update=changes)
            refs.append(node_ref(point))
        except ValueError as exc:
            raise ValueError(f"point {point.name!r}: {exc}") from None
        filled.append(point)
    return OpcuaPlan(tuple(filled), tuple(refs))
