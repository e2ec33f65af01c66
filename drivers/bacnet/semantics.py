"""Semantic tags proposed for a BACnet object: what its type, units and name say (edge.sdk.tags decides)."""

from __future__ import annotations

from drivers.bacnet.config import INPUT_TYPES, OUTPUT_TYPES
from edge.sdk.tags import Role, name_words, propose_tags

__all__ = ["tags_for"]


def tags_for(
    object_type: str, unit: str | None, name: str, description: str, writable: bool
) -> dict[str, str | list[str]]:
    """Brick class and Haystack tags for a point of this object; {} when the facts say nothing."""
    return propose_tags(unit, name_words(name, description), _role(object_type, writable))


def _role(object_type: str, writable: bool) -> Role:
    """Inputs measure (binary and multi-state ones report a status), outputs command; a value object is a
    command when commandable (a setpoint when its name says so), else what it reports."""
    analog = object_type.startswith("analog") or object_type.endswith("integer-value")
    if object_type in INPUT_TYPES:
        return "sensor" if analog else "status"
    if object_type in OUTPUT_TYPES or writable:
        return "command"
    return "sensor" if analog else "status"
