"""Outboxes and module state stores of either backend for the contract tests: the `stores` fixture (tests/conftest.py) runs each
test once on SQLite files and once on a private PostgreSQL (a database of its own per test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Unpack

import psycopg

from bench.postgres import PostgresServer
from edge.outbox.pg_module_store import PostgresModuleStore
from edge.outbox.postgres import PgPlace, PostgresOutbox
from edge.outbox.sqlite import SqliteOutbox
from edge.outbox.store import GroupCommitOutbox, StoreOptions
from edge.sdk.store import ModuleStore, StateStore

Backend = Literal["sqlite", "postgresql"]


class Stores:
    """The same `name` is the same storage (a file, or a schema), so a test can close and open it again."""

    def __init__(
        self, backend: Backend, data_dir: Path, server: PostgresServer | None = None, dsn: str = ""
    ) -> None:
        self.backend = backend
        self.data_dir = data_dir  # module stores and other files of the test
        self.server = server
        self.dsn = dsn

    def __call__(
        self, name: str = "o", *, synchronous: str = "full", **options: Unpack[StoreOptions]
    ) -> GroupCommitOutbox:
        if self.backend == "sqlite":
            return SqliteOutbox(self.path(name), synchronous=synchronous, **options)
        return PostgresOutbox(self.place(name, synchronous), **options)

    def module(self, module: str, *, readonly: bool = False) -> StateStore:
        """A module's state store on this backend (a file per module, or the shared PostgreSQL schema)."""
        if self.backend == "sqlite":
            return ModuleStore(self.data_dir / "modules" / f"{module}.sqlite", module, readonly=readonly)
        return PostgresModuleStore(self.place("modules"), module, readonly=readonly)

    def path(self, name: str = "o") -> Path:
        return self.data_dir / f"{name}.db"

    def place(self, name: str = "o", synchronous: str = "full") -> PgPlace:
        assert self.server is not None
        return PgPlace(self.dsn, self.server.password, f"edge_{name}", synchronous=synchronous)

    def sql(self, query: str, params: tuple[Any, ...] = (), name: str = "o") -> list[tuple[Any, ...]]:
        """A raw statement on the store's tables, outside the outbox (`?` placeholders), committed at once."""
        if self.backend == "sqlite":
            import sqlite3

            with sqlite3.connect(self.path(name)) as db:
                return [tuple(r) for r in db.execute(query, params).fetchall()]
        assert self.server is not None
        with psycopg.connect(self.dsn, password=self.server.password, autocommit=True) as db:
            db.execute(f'SET search_path TO "edge_{name}"')
            cursor = db.execute(query.replace("?", "%s"), params)
            return [tuple(r) for r in cursor.fetchall()] if cursor.description else []
