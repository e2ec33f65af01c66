"""Looking into an outbox from outside the gateway (the CLI), while it runs or not.

`OutboxInspector` opens the SQLite file read-only for status (`edge sync status`) and read-write only for
operator actions: `request_replay` (`edge sync replay-dead-letters`), which the running gateway's consumer
picks up within seconds, and the webhook store's start and removal of a subscription's consumer. Every tenant-owned read goes through the outbox's `tenant_filter` (`edge.outbox.schema`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from edge.outbox import ConsumerStatus
from edge.outbox.schema import SQLITE, Statements, tenant_filter
from edge.sdk.tenancy import TenantContext, tenant_scope

__all__ = ["ConsumerSummary", "OutboxInspector", "summary_row", "uplink_status"]


@dataclass(frozen=True)
class ConsumerSummary:
    status: ConsumerStatus
    backlog: int  # rows of the tenant after the consumer's cursor
    oldest_pending: float | None  # outbox time the oldest of them was stored
    dead_letters: int
    dead_letters_to_replay: int


class OutboxInspector:
    """The SQLite outbox seen from outside; `edge.outbox.postgres.PostgresInspector` is PostgreSQL's (both
    answer the same questions through `_rows` and `_execute`, with `?` placeholders)."""

    _statements: Statements = SQLITE  # the dialect of the writes (`start_cursor`)

    def __init__(self, path: Path, *, writable: bool = False) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"no outbox at {path}")
        mode = "rw" if writable else "ro"
        self._db = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=10.0, isolation_level=None)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rows(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return [tuple(r) for r in self._db.execute(query, params).fetchall()]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # an outbox from before this table existed: nothing recorded
                return []
            raise

    def _execute(self, query: str, params: tuple[Any, ...]) -> int:
        """One write (autocommit); returns the number of rows changed."""
        return int(self._db.execute(query, params).rowcount)

    def consumers(self) -> list[str]:
        """Consumers that record delivery status for the current tenant (batch consumers such as cloud sync)."""
        clause, tenant = tenant_filter()
        rows = self._rows(f"SELECT consumer FROM consumer_status WHERE {clause} ORDER BY consumer", (tenant,))
        return [str(r[0]) for r in rows]

    def summary(self, consumer: str) -> ConsumerSummary:
        clause, tenant = tenant_filter()
        cursor = self._rows(
            f"SELECT position FROM cursors WHERE consumer = ? AND {clause}", (consumer, tenant)
        )
        position = int(cursor[0][0]) if cursor else 0
        status = self._rows(
            "SELECT last_success, last_failure, last_error, delivered FROM consumer_status"
            f" WHERE consumer = ? AND {clause}",
            (consumer, tenant),
        )
        ok, failed, error, delivered = status[0] if status else (None, None, None, 0)
        (backlog, oldest), *_ = self._rows(
            f"SELECT COUNT(*), MIN(enqueued) FROM outbox WHERE {clause} AND position > ?", (tenant, position)
        )
        dead = self._rows(
            f"SELECT COUNT(*), COALESCE(SUM(replay), 0) FROM dead_letters WHERE consumer = ? AND {clause}",
            (consumer, tenant),
        )
        dead_count, to_replay = dead[0] if dead else (0, 0)
        return ConsumerSummary(
            ConsumerStatus(consumer, tenant, position, ok, failed, error, int(delivered)),
            int(backlog),
            float(oldest) if oldest is not None else None,
            int(dead_count),
            int(to_replay),
        )

    def last_position(self) -> int:
        """Position of the current tenant's newest stored event (0 when it has none)."""
        clause, tenant = tenant_filter()
        rows = self._rows(f"SELECT COALESCE(MAX(position), 0) FROM outbox WHERE {clause}", (tenant,))
        return int(rows[0][0]) if rows else 0

    def remaining(self, consumer: str, upto: int) -> tuple[int, int]:
        """(events of the tenant after the consumer's cursor up to `upto`, the cursor): what `edge sync flush`
        still waits for."""
        clause, tenant = tenant_filter()
        cursor = self._rows(
            f"SELECT position FROM cursors WHERE consumer = ? AND {clause}", (consumer, tenant)
        )
        position = int(cursor[0][0]) if cursor else 0
        rows = self._rows(
            f"SELECT COUNT(*) FROM outbox WHERE {clause} AND position > ? AND position <= ?",
            (tenant, position, upto),
        )
        return (int(rows[0][0]) if rows else 0), position

    def drops(self) -> dict[str, tuple[int, int]]:
        """reason -> (events, bytes) dropped or refused for the current tenant since the outbox was created."""
        clause, tenant = tenant_filter()
        rows = self._rows(f"SELECT reason, events, bytes FROM drop_counts WHERE {clause}", (tenant,))
        return {str(r): (int(e), int(b)) for r, e, b in rows}

    def usage(self) -> tuple[int, int]:
        clause, tenant = tenant_filter()
        rows = self._rows(f"SELECT events, bytes FROM tenant_usage WHERE {clause}", (tenant,))
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def dead_letters(self, consumer: str, limit: int = 100) -> list[tuple[Any, ...]]:
        """(position, id, type, subject, reason, dead_at, attempts, replay) of the consumer's dead letters in
        the current tenant, oldest first."""
        clause, tenant = tenant_filter()
        return self._rows(
            "SELECT position, id, type, subject, reason, dead_at, attempts, replay FROM dead_letters"
            f" WHERE {clause} AND consumer = ? ORDER BY position LIMIT ?",
            (tenant, consumer, limit),
        )

    def start_cursor(self, consumer: str) -> int:
        """Start `consumer` at the current tenant's newest event (it gets what is stored from now on); returns
        that position. Needs `writable=True`."""
        _, tenant = tenant_filter()
        newest = self.last_position()
        self._execute(self._statements.upsert_cursor, (consumer, tenant, newest))
        return newest

    def forget_consumer(self, consumer: str) -> None:
        """Delete the consumer's cursor, delivery status and dead letters in the current tenant (a removed
        webhook). Each delete stands alone, so running it again finishes an interrupted one."""
        clause, tenant = tenant_filter()
        for table in ("cursors", "consumer_status", "dead_letters"):
            self._execute(f"DELETE FROM {table} WHERE {clause} AND consumer = ?", (tenant, consumer))

    def request_replay(self, consumer: str | None = None) -> int:
        """Mark the tenant's dead letters for replay; returns how many. Needs `writable=True`."""
        clause, tenant = tenant_filter()
        query = f"UPDATE dead_letters SET replay = 1 WHERE {clause}"
        params: tuple[Any, ...] = (tenant,)
        if consumer is not None:
            query += " AND consumer = ?"
            params += (consumer,)
        return self._execute(query, params)


def age(outbox_time: float | None, now: float | None = None) -> float | None:
    """Seconds since an outbox time (outbox times are wall-clock seconds)."""
    if outbox_time is None:
        return None
    return max(0.0, (now or time.time()) - outbox_time)


def summary_row(tenant: str, s: ConsumerSummary, now: float) -> dict[str, Any]:
    """One uplink of one tenant as `edge sync status --json` and the API's /v1/sync show it."""
    return {
        "tenant": tenant,
        "consumer": s.status.consumer,
        "backlog": s.backlog,
        "oldest_pending_age_s": age(s.oldest_pending, now),
        "last_success_age_s": age(s.status.last_success, now),
        "last_failure_age_s": age(s.status.last_failure, now),
        "last_error": s.status.last_error,
        "delivered": s.status.delivered,
        "dead_letters": s.dead_letters,
        "dead_letters_to_replay": s.dead_letters_to_replay,
    }


def uplink_status(
    inspector: OutboxInspector,
    tenants: Mapping[str, TenantContext],
    *,
    tenant: str | None = None,
    consumer: str | None = None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Per tenant and uplink: backlog, oldest pending, last success/failure, dead letters, drops, usage.

    A tenant where no uplink has run yet gets one row with `consumer` None and its drop counts."""
    now = time.time() if now is None else now
    rows: list[dict[str, Any]] = []
    for tenant_id, ctx in tenants.items():
        if tenant is not None and tenant_id != tenant:
            continue
        with tenant_scope(ctx):
            names = [consumer] if consumer else inspector.consumers()
            drops = {reason: n for reason, (n, _) in inspector.drops().items()}
            usage = inspector.usage()
            for name in names:
                row = summary_row(tenant_id, inspector.summary(name), now)
                row["dropped"] = drops
                row["outbox_events"], row["outbox_bytes"] = usage
                rows.append(row)
            if not names:
                rows.append({"tenant": tenant_id, "consumer": None, "dropped": drops})
    return rows
