"""Fencing on a shared outbox: each committing transaction checks that this instance still holds the leases of
the devices in its batch (edge/outbox/store.py `CommitFence`).

The check locks the lease rows it reads (FOR SHARE) until the batch commits, so a takeover's UPDATE of the same
rows waits for that commit: events of a device are either committed while their writer held its lease, and
the next owner then reads their sequence from the outbox, or refused. This closes the one window the local
deadline leaves open: events appended in time but committed late (a slow or partitioned database).
"""

from __future__ import annotations

from edge.cluster.schema import SCHEMA
from edge.outbox.router import OutboxRouter
from edge.outbox.store import GroupCommitOutbox, Transaction

__all__ = ["LeaseFence", "fence_store"]


class LeaseFence:
    def __init__(self, cluster: str, token: str) -> None:
        self._cluster = cluster
        self._token = token  # the member's incarnation (ClusterMember.token)

    async def refused(self, tx: Transaction, devices: set[str]) -> set[str]:
        rows = await tx.rows(
            f"""
            SELECT name FROM {SCHEMA}.leases
            WHERE cluster = ? AND kind = 'device' AND name = ANY(?) AND token = ? AND expires_at > now()
            FOR SHARE
            """,
            (self._cluster, sorted(devices), self._token),
        )
        return devices - {str(r[0]) for r in rows}


def fence_store(outbox: object, tenant: str, fence: LeaseFence) -> bool:
    """Fence the store holding `tenant`'s rows (a tenant on the shared tables, whose database also holds the
    leases); False when the outbox is not one this can fence."""
    store = outbox.store_of(tenant) if isinstance(outbox, OutboxRouter) else outbox
    if not isinstance(store, GroupCommitOutbox):
        return False
    store.fence = fence
    return True
