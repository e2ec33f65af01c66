"""Cluster mode: several gateway instances share one configuration and one PostgreSQL (docs/scale.md).

Each device is polled by the one instance holding its lease; each tenant's tenant-wide consumers (cloud uplink,
webhooks, module batch subscriptions) run on the one instance holding its leadership lease. `ClusterMember`
keeps the leases (member.py), `LeaseStore` is their SQL (leases.py), `preferred_owners` decides who should hold
what (assign.py), `cluster_status` answers `edge cluster status` (status.py).

The names load on first use (PEP 562), like `edge.api`'s: leases and membership need psycopg (~9 MB with its
libpq), which a gateway outside cluster mode never loads; `InstanceTaken` lives in errors.py so `edge run` can
catch it without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edge.cluster.assign import preferred_owner, preferred_owners
from edge.cluster.errors import InstanceTaken

if TYPE_CHECKING:
    from edge.cluster.leases import Claim, LeaseRow, LeaseStore, Member
    from edge.cluster.member import ClusterMember, Holder, connect

_HOMES = {
    "Claim": "edge.cluster.leases",
    "LeaseRow": "edge.cluster.leases",
    "LeaseStore": "edge.cluster.leases",
    "Member": "edge.cluster.leases",
    "ClusterMember": "edge.cluster.member",
    "Holder": "edge.cluster.member",
    "connect": "edge.cluster.member",
}

__all__ = [
    "Claim",
    "ClusterMember",
    "Holder",
    "InstanceTaken",
    "LeaseRow",
    "LeaseStore",
    "Member",
    "connect",
    "preferred_owner",
    "preferred_owners",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'edge.cluster' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
