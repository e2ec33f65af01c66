"""The outbox's SQLite schema, its statements, and its tenant filter: the one definition of the file's layout.

`Statements` are the writes whose text differs between SQL dialects (upserts); `SQLITE` holds SQLite's, and
`edge.outbox.pg_schema.POSTGRES` PostgreSQL's. Everything else the outbox runs is plain SQL both accept.

Public because three packages read or write these tables directly: the outbox (`edge.outbox.sqlite`), the
inspector behind `edge sync status` (`edge.outbox.inspect`) and the webhook store, which keeps its
subscriptions in the same file and starts a new subscription's cursor there (`edge.webhooks.store`).

Every statement on tenant-owned rows takes its tenant clause from `tenant_filter`, the only place the outbox
reads the tenant context (`edge.sdk.tenancy.current_tenant`). The statements here that name `tenant = ?`
directly are the kernel's own bookkeeping (usage, counters), written by the outbox for the tenant of the
rows it is writing.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.sdk.tenancy import current_tenant

__all__ = [
    "ADD_DROPS",
    "ADD_USAGE",
    "DEAD_LETTER_COLUMNS",
    "EVENT_COLUMNS",
    "INSERT",
    "REBUILD_USAGE",
    "SCHEMA",
    "SQLITE",
    "UPSERT_CURSOR",
    "UPSERT_DEAD_LETTER",
    "UPSERT_SEQUENCE",
    "UPSERT_STATUS",
    "Statements",
    "tenant_filter",
]


def tenant_filter() -> tuple[str, str]:
    """`(clause, tenant)`: the WHERE clause (`tenant = ?`) and its parameter for the current tenant.

    Raises `NoTenantContext` outside a tenant scope, so no tenant-owned row is read or written without one."""
    return "tenant = ?", current_tenant().tenant_id


SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    position  INTEGER PRIMARY KEY,
    id        TEXT NOT NULL,
    tenant    TEXT NOT NULL,
    type      TEXT NOT NULL,
    subject   TEXT NOT NULL,
    device    TEXT,
    sequence  INTEGER,
    time      REAL NOT NULL,
    enqueued  REAL NOT NULL,
    body      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_tenant ON outbox(tenant);
CREATE TABLE IF NOT EXISTS cursors (
    consumer  TEXT NOT NULL,
    tenant    TEXT NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (consumer, tenant)
);
CREATE TABLE IF NOT EXISTS device_sequences (
    tenant    TEXT NOT NULL,
    device    TEXT NOT NULL,
    last      INTEGER NOT NULL,
    PRIMARY KEY (tenant, device)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    consumer  TEXT NOT NULL,
    tenant    TEXT NOT NULL,
    position  INTEGER NOT NULL,
    id        TEXT NOT NULL,
    type      TEXT NOT NULL,
    subject   TEXT NOT NULL,
    device    TEXT,
    sequence  INTEGER,
    time      REAL NOT NULL,
    reason    TEXT NOT NULL,
    dead_at   REAL NOT NULL,
    attempts  INTEGER NOT NULL DEFAULT 1,
    replay    INTEGER NOT NULL DEFAULT 0,
    body      BLOB NOT NULL,
    PRIMARY KEY (consumer, tenant, position)
);
CREATE TABLE IF NOT EXISTS consumer_status (
    consumer      TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    last_success  REAL,
    last_failure  REAL,
    last_error    TEXT,
    delivered     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer, tenant)
);
CREATE TABLE IF NOT EXISTS tenant_usage (
    tenant    TEXT PRIMARY KEY,
    events    INTEGER NOT NULL,
    bytes     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS drop_counts (
    tenant    TEXT NOT NULL,
    reason    TEXT NOT NULL,
    events    INTEGER NOT NULL,
    bytes     INTEGER NOT NULL,
    last      REAL NOT NULL,
    PRIMARY KEY (tenant, reason)
);
"""

# Outboxes created before usage was tracked: count once, on open.
REBUILD_USAGE = (
    "INSERT OR REPLACE INTO tenant_usage (tenant, events, bytes)"
    " SELECT tenant, COUNT(*), COALESCE(SUM(length(body)), 0) FROM outbox GROUP BY tenant"
)

INSERT = (
    "INSERT INTO outbox (position, id, tenant, type, subject, device, sequence, time, enqueued, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPSERT_SEQUENCE = (
    "INSERT INTO device_sequences (tenant, device, last) VALUES (?, ?, ?)"
    " ON CONFLICT (tenant, device) DO UPDATE SET last = MAX(last, excluded.last)"
)
UPSERT_CURSOR = (
    "INSERT INTO cursors (consumer, tenant, position) VALUES (?, ?, ?)"
    " ON CONFLICT (consumer, tenant) DO UPDATE SET position = MAX(position, excluded.position)"
)
UPSERT_STATUS = (
    "INSERT INTO consumer_status (consumer, tenant, last_success, last_failure, last_error, delivered)"
    " VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (consumer, tenant) DO UPDATE SET"
    " last_success = COALESCE(excluded.last_success, last_success),"
    " last_failure = COALESCE(excluded.last_failure, last_failure),"
    " last_error = CASE WHEN excluded.last_failure IS NOT NULL THEN excluded.last_error ELSE last_error END,"
    " delivered = delivered + excluded.delivered"
)
ADD_USAGE = (
    "INSERT INTO tenant_usage (tenant, events, bytes) VALUES (?, ?, ?)"
    " ON CONFLICT (tenant) DO UPDATE SET events = events + excluded.events, bytes = bytes + excluded.bytes"
)
ADD_DROPS = (
    "INSERT INTO drop_counts (tenant, reason, events, bytes, last) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant, reason) DO UPDATE SET events = events + excluded.events,"
    " bytes = bytes + excluded.bytes, last = excluded.last"
)
UPSERT_DEAD_LETTER = (
    "INSERT INTO dead_letters (consumer, tenant, position, id, type, subject, device, sequence, time, reason,"
    " dead_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (consumer, tenant, position) DO UPDATE SET reason = excluded.reason,"
    " dead_at = excluded.dead_at, attempts = attempts + 1, replay = 0"
)
EVENT_COLUMNS = "position, id, tenant, type, subject, device, sequence, time, body"
DEAD_LETTER_COLUMNS = "consumer, position, id, tenant, type, subject, device, sequence, time, body, reason, dead_at, attempts, replay"


@dataclass(frozen=True, slots=True)
class Statements:
    """The outbox's dialect-specific writes (`?` placeholders in every dialect)."""

    insert: str
    upsert_sequence: str
    upsert_cursor: str
    upsert_status: str
    add_usage: str
    add_drops: str
    upsert_dead_letter: str
    rebuild_usage: str
    head: str  # (the highest position ever handed out, the newest `enqueued` stored)


SQLITE = Statements(
    insert=INSERT,
    upsert_sequence=UPSERT_SEQUENCE,
    upsert_cursor=UPSERT_CURSOR,
    upsert_status=UPSERT_STATUS,
    add_usage=ADD_USAGE,
    add_drops=ADD_DROPS,
    upsert_dead_letter=UPSERT_DEAD_LETTER,
    rebuild_usage=REBUILD_USAGE,
    # a cursor or dead letter may be past the newest row (retention emptied the outbox): positions never go back
    head=(
        "SELECT MAX(COALESCE((SELECT MAX(position) FROM outbox), 0),"
        " COALESCE((SELECT MAX(position) FROM cursors), 0),"
        " COALESCE((SELECT MAX(position) FROM dead_letters), 0)), (SELECT MAX(enqueued) FROM outbox)"
    ),
)
