"""The outbox schema is versioned: a 0.1.0 database (tests/data, written by release 0.1.0's code) is upgraded
at open with a backup first and nothing lost; a database from a newer release is refused."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from edge.outbox.migrations import SCHEMA_VERSION, SchemaTooNew
from edge.outbox.sqlite import SqliteOutbox
from edge.sdk.events import make_event
from edge.sdk.tenancy import TenantContext, tenant_scope

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
