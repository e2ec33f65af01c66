"""The outbox's PostgreSQL layout, its dialect of the writes, and its versioned migrations.

The tables are SQLite's (`edge.outbox.schema`) in PostgreSQL types (`bigint` positions, `double precision`
times, `bytea` bodies), plus `outbox_head`: the last position handed out. A committing transaction takes
its positions with `UPDATE outbox_head ... RETURNING`, whose row lock is held until COMMIT, so several
writers (cluster instances) commit in position order and a reader never sees position N before N - 1.

Migrations: `schema_history` records each version (the highest is the schema's version), `STEPS[n]` turns
version n into n + 1. `migrate` runs in one transaction under an advisory lock keyed by the schema, so
instances starting together migrate once; DDL is transactional in PostgreSQL, so a failed step leaves the
old schema whole (no file copy needed: back up with pg_dump, docs/scale.md). A schema newer than this release
is refused.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql as pgsql

from edge.outbox import migrations
from edge.outbox.schema import Statements
from edge.sdk.errors import EdgeError

__all__ = ["POSTGRES", "SCHEMA_VERSION", "STEPS", "SchemaTooNew", "migrate"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    position  bigint PRIMARY KEY,
    id        text NOT NULL,
    tenant    text NOT NULL,
    type      text NOT NULL,
    subject   text NOT NULL,
    device    text,
    sequence  bigint,
    time      double precision NOT NULL,
    enqueued  double precision NOT NULL,
    body      bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_tenant ON outbox (tenant, position);
CREATE TABLE IF NOT EXISTS outbox_head (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    last  bigint NOT NULL
);
INSERT INTO outbox_head (one, last) VALUES (true, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS cursors (
    consumer  text NOT NULL,
    tenant    text NOT NULL,
    position  bigint NOT NULL,
    PRIMARY KEY (consumer, tenant)
);
CREATE TABLE IF NOT EXISTS device_sequences (
    tenant  text NOT NULL,
    device  text NOT NULL,
    last    bigint NOT NULL,
    PRIMARY KEY (tenant, device)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    consumer  text NOT NULL,
    tenant    text NOT NULL,
    position  bigint NOT NULL,
    id        text NOT NULL,
    type      text NOT NULL,
    subject   text NOT NULL,
    device    text,
    sequence  bigint,
    time      double precision NOT NULL,
    reason    text NOT NULL,
    dead_at   double precision NOT NULL,
    attempts  integer NOT NULL DEFAULT 1,
    replay    integer NOT NULL DEFAULT 0,
    body      bytea NOT NULL,
    PRIMARY KEY (consumer, tenant, position)
);
CREATE TABLE IF NOT EXISTS consumer_status (
    consumer      text NOT NULL,
    tenant        text NOT NULL,
    last_success  double precision,
    last_failure  double precision,
    last_error    text,
    delivered     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer, tenant)
);
CREATE TABLE IF NOT EXISTS tenant_usage (
    tenant  text PRIMARY KEY,
    events  bigint NOT NULL,
    bytes   bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS drop_counts (
    tenant  text NOT NULL,
    reason  text NOT NULL,
    events  bigint NOT NULL,
    bytes   bigint NOT NULL,
    last    double precision NOT NULL,
    PRIMARY KEY (tenant, reason)
);
CREATE TABLE IF NOT EXISTS schema_history (
    version     integer PRIMARY KEY,
    applied_at  double precision NOT NULL,
    release     text NOT NULL
);
"""

# STEPS[n] turns version n into n + 1 (version 1 is SCHEMA above).
STEPS: dict[int, str] = {}
SCHEMA_VERSION = 1 + len(STEPS)

POSTGRES = Statements(
    insert=(
        "INSERT INTO outbox (position, id, tenant, type, subject, device, sequence, time, enqueued, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    upsert_sequence=(
        "INSERT INTO device_sequences AS s (tenant, device, last) VALUES (?, ?, ?)"
        " ON CONFLICT (tenant, device) DO UPDATE SET last = GREATEST(s.last, excluded.last)"
    ),
    upsert_cursor=(
        "INSERT INTO cursors AS c (consumer, tenant, position) VALUES (?, ?, ?)"
        " ON CONFLICT (consumer, tenant) DO UPDATE SET position = GREATEST(c.position, excluded.position)"
    ),
    upsert_status=(
        "INSERT INTO consumer_status AS s (consumer, tenant, last_success, last_failure, last_error, delivered)"
        " VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (consumer, tenant) DO UPDATE SET"
        " last_success = COALESCE(excluded.last_success, s.last_success),"
        " last_failure = COALESCE(excluded.last_failure, s.last_failure),"
        " last_error = CASE WHEN excluded.last_failure IS NOT NULL THEN excluded.last_error ELSE s.last_error END,"
        " delivered = s.delivered + excluded.delivered"
    ),
    add_usage=(
        "INSERT INTO tenant_usage AS u (tenant, events, bytes) VALUES (?, ?, ?)"
        " ON CONFLICT (tenant) DO UPDATE SET events = u.events + excluded.events, bytes = u.bytes + excluded.bytes"
    ),
    add_drops=(
        "INSERT INTO drop_counts AS d (tenant, reason, events, bytes, last) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (tenant, reason) DO UPDATE SET events = d.events + excluded.events,"
        " bytes = d.bytes + excluded.bytes, last = excluded.last"
    ),
    upsert_dead_letter=(
        "INSERT INTO dead_letters AS l (consumer, tenant, position, id, type, subject, device, sequence, time,"
        " reason, dead_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (consumer, tenant, position) DO UPDATE SET reason = excluded.reason,"
        " dead_at = excluded.dead_at, attempts = l.attempts + 1, replay = 0"
    ),
    rebuild_usage=(
        "INSERT INTO tenant_usage (tenant, events, bytes)"
        " SELECT tenant, COUNT(*), COALESCE(SUM(length(body)), 0) FROM outbox GROUP BY tenant"
        " ON CONFLICT (tenant) DO UPDATE SET events = excluded.events, bytes = excluded.bytes"
    ),
    head="SELECT (SELECT last FROM outbox_head), (SELECT MAX(enqueued) FROM outbox)",
)


class SchemaTooNew(migrations.SchemaTooNew):
    """A PostgreSQL schema from a newer release (`edge run` exits as for a newer SQLite file)."""

    def __init__(self, where: str, found: int) -> None:
        EdgeError.__init__(
            self,
            f"{where}: schema version {found} was written by a newer gateway (this one knows up to"
            f" {SCHEMA_VERSION}); upgrade the gateway, or restore the database from its backup",
        )


async def migrate(db: psycopg.AsyncConnection[tuple[Any, ...]], schema: str, release: str) -> int:
    """Bring `schema` (created if missing) to `SCHEMA_VERSION`; returns the
    version it had (0: new). `db` is in autocommit mode; the whole migration is one transaction."""
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"edge-outbox:{schema}",))
        cursor = await db.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if (
            await cursor.fetchone() is None
        ):  # a tenant's role may own its schema without rights on the database
            await db.execute(pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(schema)))
        await db.execute(pgsql.SQL("SET LOCAL search_path TO {}").format(pgsql.Identifier(schema)))
        cursor = await db.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'schema_history'", (schema,)
        )
        found = 0
        if await cursor.fetchone() is not None:
            cursor = await db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_history")
            row = await cursor.fetchone()
            found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(f"PostgreSQL schema {schema!r}", found)
        if found == 0:
            await db.execute(SCHEMA)
            await _record(db, 1, release)
        for version in range(max(found, 1), SCHEMA_VERSION):
            await db.execute(STEPS[version])
            await _record(db, version + 1, release)
        return found


async def _record(db: psycopg.AsyncConnection[tuple[Any, ...]], version: int, release: str) -> None:
    await db.execute(
        "INSERT INTO schema_history (version, applied_at, release)"
        " VALUES (%s, extract(epoch FROM now()), %s) ON CONFLICT (version) DO NOTHING",
        (version, release),
    )
