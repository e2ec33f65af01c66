"""The SQL of membership and leases: each call is one statement or one transaction on a psycopg connection.

Every write that keeps or takes a lease is conditional in PostgreSQL itself (the row's token, its expiry by the
database's clock), so two instances racing for a device cannot both win: one UPDATE or INSERT ... ON CONFLICT
sees the other's committed row and does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from edge.cluster.errors import InstanceTaken
from edge.cluster.schema import DDL, SCHEMA

__all__ = ["Claim", "InstanceTaken", "LeaseRow", "LeaseStore", "Member"]

Kind = Literal["device", "leader"]
Connection = psycopg.AsyncConnection[Any]


@dataclass(frozen=True)
class Member:
    instance: str
    host: str
    pid: int
    alive: bool
    draining: bool
    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Claim:
    """A lease just taken: its fencing epoch, and the sequence its last owner left (exact when it was
    released, a lower bound when it expired)."""

    kind: Kind
    name: str
    epoch: int
    sequence: int
    handover: Literal["new", "released", "expired"]
    previous: str | None  # the instance that held it before


@dataclass(frozen=True)
class LeaseRow:
    kind: Kind
    name: str
    owner: str | None
    epoch: int
    expires_at: datetime
    expired: bool
    sequence: int


class LeaseStore:
    """One cluster's rows (`cluster` = the gateway id all instances share) on one connection."""

    def __init__(self, connection: Connection, cluster: str) -> None:
        self._db = connection  # in autocommit mode: each call is its own transaction unless inside one
        self.cluster = cluster

    async def _rows(self, query: str, *params: object) -> list[dict[str, Any]]:
        async with self._db.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(query, params)
            return await cursor.fetchall()

    async def _count(self, query: str, *params: object) -> int:
        cursor = await self._db.execute(query, params)
        return cursor.rowcount

    async def create_schema(self) -> None:
        async with self._db.transaction():
            # instances starting together would race on CREATE ... IF NOT EXISTS; one at a time
            await self._db.execute("SELECT pg_advisory_xact_lock(hashtext('edge_cluster.schema'))")
            for statement in DDL.split(";\n"):
                if statement.strip():
                    await self._db.execute(statement)  # type: ignore[arg-type]  # our own constant text

    async def heartbeat(self, instance: str, token: str, host: str, pid: int, ttl: float) -> None:
        """Join or stay a member. Raises InstanceTaken when another live incarnation holds the name."""
        rows = await self._rows(
            f"""
            INSERT INTO {SCHEMA}.members AS m (cluster, instance, token, host, pid, expires_at)
            VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s))
            ON CONFLICT (cluster, instance) DO UPDATE SET
                heartbeat_at = now(), expires_at = EXCLUDED.expires_at,
                draining = m.draining AND m.token = EXCLUDED.token,
                started_at = CASE WHEN m.token = EXCLUDED.token THEN m.started_at ELSE now() END,
                token = EXCLUDED.token, host = EXCLUDED.host, pid = EXCLUDED.pid
            WHERE m.token = EXCLUDED.token OR m.expires_at <= now()
            RETURNING 1
            """,
            self.cluster,
            instance,
            token,
            host,
            pid,
            ttl,
        )
        if not rows:
            holders = await self._rows(
                f"SELECT host, pid FROM {SCHEMA}.members WHERE cluster = %s AND instance = %s",
                self.cluster,
                instance,
            )
            where = f"{holders[0]['host']} pid {holders[0]['pid']}" if holders else "another process"
            raise InstanceTaken(f"instance {instance!r} of cluster {self.cluster!r} already runs on {where}")

    async def renew(
        self, token: str, ttl: float, sequences: Mapping[str, int]
    ) -> dict[tuple[Kind, str], int]:
        """Extend every unexpired lease this incarnation holds, recording the devices' sequences; returns
        what is still held, with each lease's epoch (a lease missing here was lost)."""
        rows = await self._rows(
            f"""
            UPDATE {SCHEMA}.leases AS l SET
                expires_at = now() + make_interval(secs => %s),
                sequence = GREATEST(l.sequence, COALESCE(
                    (SELECT s.seq FROM unnest(%s::text[], %s::bigint[]) AS s(name, seq)
                     WHERE s.name = l.name AND l.kind = 'device'), l.sequence))
            WHERE l.cluster = %s AND l.token = %s AND l.expires_at > now()
            RETURNING l.kind, l.name, l.epoch
            """,
            ttl,
            list(sequences),
            list(sequences.values()),
            self.cluster,
            token,
        )
        return {(r["kind"], r["name"]): r["epoch"] for r in rows}

    async def claim(
        self, kind: Kind, names: Sequence[str], instance: str, token: str, ttl: float
    ) -> list[Claim]:
        """Take those of `names` nobody holds (released, expired or never held); returns what was taken."""
        rows = await self._rows(
            f"""
            INSERT INTO {SCHEMA}.leases AS l (cluster, kind, name, owner, token, expires_at)
            SELECT %s, %s, n, %s, %s, now() + make_interval(secs => %s) FROM unnest(%s::text[]) AS n
            ON CONFLICT (cluster, kind, name) DO UPDATE SET
                owner = EXCLUDED.owner, token = EXCLUDED.token, expires_at = EXCLUDED.expires_at,
                epoch = l.epoch + 1, acquired_at = now(), previous = COALESCE(l.owner, l.previous),
                handover = CASE WHEN l.token IS NULL THEN 'released' ELSE 'expired' END
            WHERE l.token IS NULL OR l.expires_at <= now()
            RETURNING l.name, l.epoch, l.sequence, l.handover, l.previous
            """,
            self.cluster,
            kind,
            instance,
            token,
            ttl,
            list(names),
        )
        return [Claim(kind, r["name"], r["epoch"], r["sequence"], r["handover"], r["previous"]) for r in rows]

    async def release(self, kind: Kind, name: str, token: str, sequence: int | None = None) -> bool:
        """Give a lease back at once (its poller stopped, `sequence` its last): the next owner need not wait
        for it to expire and continues the sequence exactly."""
        released = await self._count(
            f"""
            UPDATE {SCHEMA}.leases SET owner = NULL, token = NULL, expires_at = now(), previous = owner,
                sequence = GREATEST(sequence, COALESCE(%s::bigint, sequence))
            WHERE cluster = %s AND kind = %s AND name = %s AND token = %s
            """,
            sequence,
            self.cluster,
            kind,
            name,
            token,
        )
        return released == 1

    async def expire(self, kind: Kind, name: str, token: str) -> None:
        """End a lease at once without handing its sequence over as exact: the next owner treats it as a lost
        owner's (sequence headroom, the device reported down then up)."""
        await self._count(
            f"UPDATE {SCHEMA}.leases SET expires_at = now()"
            " WHERE cluster = %s AND kind = %s AND name = %s AND token = %s",
            self.cluster,
            kind,
            name,
            token,
        )

    async def leave(self, instance: str, token: str) -> None:
        """Remove this incarnation's member row (its leases were released before)."""
        await self._count(
            f"DELETE FROM {SCHEMA}.members WHERE cluster = %s AND instance = %s AND token = %s",
            self.cluster,
            instance,
            token,
        )

    async def set_draining(self, instance: str, draining: bool = True, token: str | None = None) -> bool:
        """Mark an instance draining (its devices move to the others) or not; False when it is no member.
        `token`: only that incarnation (an instance draining itself never marks a namesake)."""
        changed = await self._count(
            f"UPDATE {SCHEMA}.members SET draining = %s"
            " WHERE cluster = %s AND instance = %s AND (%s::text IS NULL OR token = %s::text)",
            draining,
            self.cluster,
            instance,
            token,
            token,
        )
        return changed == 1

    async def members(self) -> list[Member]:
        rows = await self._rows(
            f"""
            SELECT instance, host, pid, expires_at > now() AS alive, draining, started_at, heartbeat_at,
                   expires_at
            FROM {SCHEMA}.members WHERE cluster = %s ORDER BY instance
            """,
            self.cluster,
        )
        return [Member(**r) for r in rows]

    async def leases(self) -> list[LeaseRow]:
        rows = await self._rows(
            f"""
            SELECT kind, name, owner, epoch, expires_at, expires_at <= now() OR token IS NULL AS expired,
                   sequence
            FROM {SCHEMA}.leases WHERE cluster = %s ORDER BY kind, name
            """,
            self.cluster,
        )
        return [LeaseRow(**r) for r in rows]
