"""The one transaction helper (`edge.sdk.transaction`) on real SQLite files: committed work is there for every
other connection, failed work (a failing COMMIT included) is not, and the original error is what the caller sees."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import aiosqlite
import pytest

from edge.sdk.transaction import async_transaction, transaction

# A deferred foreign key is only checked at COMMIT: the way to make a COMMIT itself fail.
_SCHEMA = """
CREATE TABLE parent (id INTEGER PRIMARY KEY);
CREATE TABLE child (id INTEGER PRIMARY KEY,
                    parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
"""


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as db:
        db.executescript(_SCHEMA)
        db.execute("PRAGMA journal_mode=WAL")
    return path


@pytest.fixture
def db(db_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    conn.execute("PRAGMA foreign_keys=ON")
    yield conn
    conn.close()


def _children(path: Path) -> list[int]:
    with sqlite3.connect(path) as other:
        return [int(i) for (i,) in other.execute("SELECT id FROM child ORDER BY id")]


def test_a_block_that_ends_is_committed(db: sqlite3.Connection, db_path: Path) -> None:
    with transaction(db):
        db.execute("INSERT INTO parent VALUES (1)")
        db.execute("INSERT INTO child VALUES (1, 1)")
    assert _children(db_path) == [1] and not db.in_transaction


def test_a_block_that_raises_is_rolled_back_and_its_error_propagates(
    db: sqlite3.Connection, db_path: Path
) -> None:
    with pytest.raises(KeyError, match="boom"), transaction(db):
        db.execute("INSERT INTO parent VALUES (1)")
        db.execute("INSERT INTO child VALUES (1, 1)")
        raise KeyError("boom")
    assert _children(db_path) == [] and not db.in_transaction


def test_a_failing_commit_is_rolled_back_too(db: sqlite3.Connection, db_path: Path) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), transaction(db):
        db.execute("INSERT INTO child VALUES (1, 42)")  # no parent 42: refused at COMMIT
    assert not db.in_transaction  # a hand-written BEGIN..COMMIT would have left it open
    with transaction(db):  # so the connection is usable at once
        db.execute("INSERT INTO parent VALUES (42)")
        db.execute("INSERT INTO child VALUES (2, 42)")
    assert _children(db_path) == [2]


def test_a_failing_rollback_never_hides_the_original_error(db: sqlite3.Connection) -> None:
    with pytest.raises(KeyError, match="original"), transaction(db):
        db.close()  # the rollback cannot run on a closed connection
        raise KeyError("original")


def test_immediate_takes_the_write_lock_at_begin_deferred_at_the_first_write(
    db: sqlite3.Connection, db_path: Path
) -> None:
    other = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    try:
        with transaction(db):
            with pytest.raises(sqlite3.OperationalError, match="locked"), transaction(other):
                pass
            assert not other.in_transaction
        with transaction(db, immediate=False), transaction(other):  # a deferred one holds no lock yet
            pass
    finally:
        other.close()


async def test_the_async_helper_commits_rolls_back_and_survives_a_failing_commit(
    db_path: Path,
) -> None:
    async with aiosqlite.connect(db_path, isolation_level=None) as db:
        await db.execute("PRAGMA foreign_keys=ON")
        async with async_transaction(db):
            await db.execute("INSERT INTO parent VALUES (1)")
            await db.execute("INSERT INTO child VALUES (1, 1)")
        with pytest.raises(KeyError):
            async with async_transaction(db):
                await db.execute("INSERT INTO child VALUES (2, 1)")
                raise KeyError("boom")
        with pytest.raises(sqlite3.IntegrityError):
            async with async_transaction(db, immediate=False):
                await db.execute("INSERT INTO child VALUES (3, 42)")
        assert not db.in_transaction
    assert _children(db_path) == [1]
