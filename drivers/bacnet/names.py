"""Point and profile names from BACnet object names (discovery and EDE import make them the same way)."""

from __future__ import annotations

import re

__all__ = ["sanitize_name", "unique_name"]

_NAME_BAD = re.compile(r"[^A-Za-z0-9_.\-]+")


def sanitize_name(text: str) -> str:
    """A point or profile name from a device's object name: [A-Za-z0-9][A-Za-z0-9_.-]*, at most 64."""
    cleaned = _NAME_BAD.sub("_", text.strip()).strip("_.-")
    return cleaned[:64]


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or `name_2`, `name_3`... when taken; the result is added to `taken`."""
    candidate, n = name, 2
    while candidate in taken:
        suffix = f"_{n}"
        candidate, n = name[: 64 - len(suffix)] + suffix, n + 1
    taken.add(candidate)
    return candidate
