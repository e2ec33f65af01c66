"""Cluster mode: several gateway instances share one configuration and one PostgreSQL (docs/scale.md).

Each device is polled by the one instance holding its lease; each tenant's tenant-wide consumers (cloud uplink,
webhooks, module batch subscriptions) run on the one instance holding its leadership lease. `ClusterMember`
keeps the leases (member.py), `LeaseStore` is their SQL (leases.py), `preferred_owners` decides who should hold
what (assign.py), `cluster_status` answers `edge cluster status` (status.py).
"""

from edge.cluster.assign import preferred_owner, preferred_owners
from edge.cluster.leases import Claim, InstanceTaken, LeaseRow, LeaseStore, Member
from edge.cluster.member import ClusterMember, Holder, connect

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
