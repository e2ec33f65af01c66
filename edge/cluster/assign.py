"""Who should own what: rendezvous (highest random weight) hashing over the live, non-draining members.

Pure functions. Each device (and each tenant's leadership) goes to the member with the highest hash of
(member, name): every instance computes the same answer from the same member list, and when a member joins or
leaves only the names it wins or held move (about 1/n of them), not a reshuffle of everything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = ["preferred_owner", "preferred_owners"]


def _weight(member: str, name: str) -> int:
    digest = hashlib.blake2b(f"{member}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def preferred_owner(name: str, members: Sequence[str]) -> str | None:
    """The member that should hold `name`; None when there is no member."""
    if not members:
        return None
    return max(members, key=lambda m: (_weight(m, name), m))


def preferred_owners(names: Iterable[str], members: Sequence[str]) -> dict[str, str]:
    """`preferred_owner` of each name (names get no entry when there are no members)."""
    out: dict[str, str] = {}
    for name in names:
        owner = preferred_owner(name, members)
        if owner is not None:
            out[name] = owner
    return out
