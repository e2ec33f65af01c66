"""The outbox schema is versioned: a 0.1.0 database (tests/data, written by release 0.1.0's code) is upgraded
at open with a backup first and nothing lost; a database from a newer release is refused. On PostgreSQL,
instances starting together create the schema once, and a newer schema is refused too."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from pathlib import Path

import psycopg
import pytest

from bench.postgres import PostgresServer
from edge.outbox.migrations import SCHEMA_VERSION, SchemaTooNew
from edge.outbox.pg_schema import SCHEMA_VERSION as PG_SCHEMA_VERSION
from edge.outbox.pg_schema import SchemaTooNew as PgSchemaTooNew
from edge.outbox.postgres import PgPlace, PostgresOutbox
from edge.outbox.postgres import prepare_place as pg_migrate_place
from edge.outbox.sqlite import SqliteOutbox
from edge.sdk.events import make_event
from edge.sdk.tenancy import TenantContext, tenant_scope
from edge.version import __version__

OLD_DB = Path(__file__).parents[1] / "data" / "outbox-0.1.0.db"


def _rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT position, id, tenant, device, sequence, body FROM outbox ORDER BY position"
        ).fetchall()


def _user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


async def test_a_0_1_0_outbox_is_upgraded_with_a_backup_and_keeps_every_event_cursor_and_sequence(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    shutil.copy(OLD_DB, path)
    before = _rows(path)
    assert len(before) == 202 and _user_version(path) == 0
    outbox = SqliteOutbox(path, commit_interval=0.001)
    await outbox.open()
    try:
        assert await outbox.last_sequences() == {("acme", "inv-acme"): 101, ("globex", "inv-globex"): 101}
        with tenant_scope(TenantContext("acme")):
            assert await outbox.cursor("mqtt") == 150
            assert await outbox.count() == 101
            assert outbox.usage()[0] == 101
            position = await outbox.append_durable(
                make_event(
                    type="org.edgegw.telemetry",
                    source="/gw/new",
                    subject="roof/inv-acme",
                    tenant="acme",
                    time=1_700_000_300.0,
                    data={"power": 1},
                    device="inv-acme",
                    sequence=102,
                )
            )
        with tenant_scope(TenantContext("globex")):
            assert await outbox.cursor("mqtt") == 40
    finally:
        await outbox.close()
    assert position == 203
    assert _rows(path)[:202] == before
    assert _user_version(path) == SCHEMA_VERSION
    backup = tmp_path / "outbox.db.v1.bak"
    assert _rows(backup) == before and _user_version(backup) == 0
    with sqlite3.connect(path) as db:
        assert [v for (v,) in db.execute("SELECT version FROM schema_history")] == [SCHEMA_VERSION]


async def test_a_new_outbox_starts_at_the_current_version_without_a_backup(tmp_path: Path) -> None:
    outbox = SqliteOutbox(tmp_path / "outbox.db")
    await outbox.open()
    await outbox.close()
    assert _user_version(tmp_path / "outbox.db") == SCHEMA_VERSION
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".bak")]


async def test_an_outbox_from_a_newer_release_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    shutil.copy(OLD_DB, path)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    outbox = SqliteOutbox(path)
    with pytest.raises(SchemaTooNew, match="newer gateway"):
        await outbox.open()
    assert _user_version(path) == SCHEMA_VERSION + 1 and len(_rows(path)) == 202


async def test_a_postgresql_schema_is_created_once_by_instances_starting_together(
    postgres: PostgresServer,
) -> None:
    dsn = postgres.create_database("migrate_together")
    place = PgPlace(dsn, postgres.password, "edge")
    found = await asyncio.gather(*(pg_migrate_place(place) for _ in range(4)))
    assert sorted(found) == [0, 1, 1, 1]  # one created it under the advisory lock; the others found version 1
    with psycopg.connect(dsn, password=postgres.password) as db:
        history = db.execute("SELECT version, release FROM edge.schema_history").fetchall()
    assert history == [(PG_SCHEMA_VERSION, __version__)]


async def test_a_postgresql_schema_from_a_newer_release_is_refused_and_left_alone(
    postgres: PostgresServer,
) -> None:
    dsn = postgres.create_database("migrate_newer")
    outbox = PostgresOutbox(PgPlace(dsn, postgres.password, "edge"))
    await outbox.open()
    await outbox.close()
    with psycopg.connect(dsn, password=postgres.password, autocommit=True) as db:
        db.execute("INSERT INTO edge.schema_history VALUES (99, 0, '9.0.0')")
    again = PostgresOutbox(PgPlace(dsn, postgres.password, "edge"))
    with pytest.raises(PgSchemaTooNew, match="schema version 99 was written by a newer gateway"):
        await again.open()
    with psycopg.connect(dsn, password=postgres.password) as db:
        assert db.execute("SELECT MAX(version) FROM edge.schema_history").fetchone() == (99,)
