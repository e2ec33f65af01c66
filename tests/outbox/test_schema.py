"""`edge.outbox.schema.tenant_filter`, the outbox's one tenant filter, used by the outbox, the inspector
(`edge sync status`) and the webhook store: outside a tenant scope nothing is read, inside one only that
tenant's rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.outbox.schema import SCHEMA, UPSERT_CURSOR, tenant_filter
from edge.sdk.errors import NoTenantContext
from edge.sdk.tenancy import TenantContext, tenant_scope


def test_the_tenant_filter_scopes_every_query_to_the_current_tenant(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "outbox.db")
    db.executescript(SCHEMA)
    db.executemany(UPSERT_CURSOR, [("mqtt", "acme", 3), ("mqtt", "globex", 9), ("mqtt", "acme", 2)])

    def cursors() -> list[tuple[str, int]]:
        clause, tenant = tenant_filter()
        return db.execute(f"SELECT tenant, position FROM cursors WHERE {clause}", (tenant,)).fetchall()

    with pytest.raises(NoTenantContext):
        cursors()
    with tenant_scope(TenantContext("acme")):
        assert cursors() == [("acme", 3)]  # a cursor never moves back
    with tenant_scope(TenantContext("globex")):
        assert cursors() == [("globex", 9)]
    db.close()
