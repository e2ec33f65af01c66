"""What `edge cluster status` and `edge cluster drain` ask PostgreSQL, without joining the cluster."""

from __future__ import annotations

from dataclasses import dataclass

from edge.cluster.leases import LeaseRow, LeaseStore, Member
from edge.cluster.member import connect

__all__ = ["ClusterStatus", "cluster_status", "set_draining"]


@dataclass(frozen=True)
class ClusterStatus:
    members: list[Member]
    devices: list[LeaseRow]
    leaders: list[LeaseRow]

    def owned_by(self, instance: str) -> list[str]:
        return [d.name for d in self.devices if d.owner == instance and not d.expired]


async def cluster_status(
    conninfo: str, password: str | None, cluster: str, wait: float = 5.0
) -> ClusterStatus:
    db = await connect(conninfo, password, wait)
    try:
        store = LeaseStore(db, cluster)
        await store.create_schema()
        leases = await store.leases()
        return ClusterStatus(
            members=await store.members(),
            devices=[row for row in leases if row.kind == "device"],
            leaders=[row for row in leases if row.kind == "leader"],
        )
    finally:
        await db.close()


async def set_draining(
    conninfo: str, password: str | None, cluster: str, instance: str, draining: bool, wait: float = 5.0
) -> bool:
    """Mark a member draining (its devices move to the others at their next renewal) or back in service."""
    db = await connect(conninfo, password, wait)
    try:
        return await LeaseStore(db, cluster).set_draining(instance, draining)
    finally:
        await db.close()
