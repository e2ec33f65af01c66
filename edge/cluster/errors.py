"""Cluster errors that callers outside cluster mode catch too (`edge run`), without loading psycopg."""

from __future__ import annotations

from edge.sdk.errors import EdgeError

__all__ = ["InstanceTaken"]


class InstanceTaken(EdgeError):
    """Another live process already runs under this instance name."""
