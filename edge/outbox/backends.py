"""The persistence registry's choice: which backend and which tier keeps each tenant's outbox rows.

`[storage] backend` picks SQLite (the default: `{data_dir}/{storage.path}`, dedicated tenants in
`{data_dir}/tenants/`) or PostgreSQL (`[storage.postgresql]`). Tenant tiers on PostgreSQL:

- `shared` (default): tables in schema `{schema}` of the DSN's database, rows told apart by the tenant column
  (the tenant filter every query carries, `edge.outbox.schema.tenant_filter`);
- `dedicated`: schema `{schema}_{tenant}`, owned by role `{schema}_{tenant}` (no login), which the store's
  connections take (`SET ROLE`): PostgreSQL itself refuses that tenant's queries on any other schema;
- `database`: database `{database}_{tenant}` on the same server (created on first use), schema `{schema}`.

Everything above builds its outbox here and sees only `edge.outbox.OutboxStore`; `open_inspector` gives the
CLI the same view of the storage without a running gateway; `module_store` is an in-process module's state on
the same backend.

The PostgreSQL modules are imported where that backend is chosen: psycopg (with its own libpq, ~9 MB of RSS)
is never loaded by a gateway on SQLite, the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config.models import GatewayConfig, PostgresConfig, StorageConfig, TenantConfig
from edge.outbox import OutboxStore
from edge.outbox.inspect import OutboxInspector
from edge.outbox.router import dedicated_path, routed, tiered_outbox
from edge.sdk.store import ModuleStore, StateStore, module_store_path

if TYPE_CHECKING:
    from edge.outbox.postgres import PgPlace

__all__ = ["build_outbox", "module_store", "open_inspector", "pg_place"]


def build_outbox(config: GatewayConfig, data_dir: Path, **overrides: Any) -> OutboxStore:
    """The gateway's outbox as configured (not opened yet). `overrides`: store options (tests, bench)."""
    storage = config.storage
    retention = {t.id: config.retention_policy(t.id) for t in config.tenants}
    options: dict[str, Any] = {
        "commit_interval": storage.commit_interval_ms / 1000,
        "commit_max_events": storage.commit_max_events,
        **overrides,
    }
    if storage.postgresql is None or storage.backend == "sqlite":
        dedicated = {t.id: dedicated_path(data_dir, t.id) for t in config.tenants if t.storage == "dedicated"}
        return tiered_outbox(
            data_dir / storage.path,
            dedicated,
            retention=retention,
            synchronous=storage.synchronous,
            **options,
        )
    from edge.outbox.postgres import PostgresOutbox

    shared = PostgresOutbox(pg_place(storage), retention=retention, **options)
    apart = {
        t.id: PostgresOutbox(pg_place(storage, t), retention={t.id: retention[t.id]}, **options)
        for t in config.tenants
        if t.storage != "shared"
    }
    return routed(shared, apart)


def pg_place(storage: StorageConfig, tenant: TenantConfig | None = None) -> PgPlace:
    """Where the tenant's rows are on PostgreSQL (`tenant` None or shared: the shared tables)."""
    from edge.outbox.postgres import PgPlace, pg_identifier

    pg: PostgresConfig | None = storage.postgresql
    if pg is None:
        raise ValueError("storage.postgresql is not configured")
    shared = PgPlace(pg.dsn, pg.password, pg.db_schema, synchronous=storage.synchronous)
    if tenant is None or tenant.storage == "shared":
        return shared
    if tenant.storage == "dedicated":
        name = pg_identifier(pg.db_schema, tenant.id)
        return PgPlace(pg.dsn, pg.password, name, role=name, synchronous=storage.synchronous)
    return shared.database(pg_identifier(shared.dbname, tenant.id))


def open_inspector(
    config: GatewayConfig, data_dir: Path, *, tenant: str | None = None, writable: bool = False
) -> OutboxInspector:
    """A status view of the configured outbox without a running gateway (`edge sync status`): the store that
    keeps `tenant`'s rows, or the shared one. Raises FileNotFoundError while a SQLite outbox was never created."""
    storage = config.storage
    tenants = {t.id: t for t in config.tenants}
    if storage.backend == "postgresql":
        from edge.outbox.postgres import PostgresInspector

        return PostgresInspector(pg_place(storage, tenants.get(tenant or "")), writable=writable)
    entry = tenants.get(tenant or "")
    path = (
        dedicated_path(data_dir, entry.id)
        if entry is not None and entry.storage == "dedicated"
        else data_dir / storage.path
    )
    return OutboxInspector(path, writable=writable)


def module_store(
    config: GatewayConfig, data_dir: Path, module: str, *, isolated: bool = False, readonly: bool = False
) -> StateStore:
    """A module's state (`ModuleContext.store`), not opened: `{data_dir}/modules/{module}.sqlite`, or the shared
    PostgreSQL schema when the gateway's storage is PostgreSQL and the module runs in the gateway's process
    (an `isolated` module's process never gets the database's credentials: it keeps its file). A read-only
    SQLite store whose file does not exist yet raises FileNotFoundError (the module never ran)."""
    if config.storage.backend == "postgresql" and not isolated:
        from edge.outbox.pg_module_store import PostgresModuleStore

        return PostgresModuleStore(pg_place(config.storage), module, readonly=readonly)
    path = module_store_path(data_dir, module)
    if readonly and not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return ModuleStore(path, module, readonly=readonly)
