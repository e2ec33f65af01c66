"""The PostgreSQL backend from the configuration down: `[storage] backend = "postgresql"` with the password as a
secret reference, the tenant tiers (shared tables, schema and role per tenant, database per tenant) checked
with raw queries as each tenant's role, and the real gateway process killed with -9 while it polls: every event
a local MQTT client received (published only after its commit) is in PostgreSQL, and sequences continue."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
from psycopg import sql

from bench.postgres import PostgresServer
from edge.config import LoadedConfig
from edge.outbox import OutboxStore
from edge.outbox.backends import build_outbox, module_store, open_inspector, pg_place
from edge.outbox.postgres import PgPlace
from edge.sdk.cli import ConfiguredGateway, open_module_store
from edge.sdk.errors import ConfigError
from edge.sdk.events import TELEMETRY, Event, make_event
from edge.sdk.tenancy import TenantContext, tenant_scope
from edge.webhooks import DestinationPolicy, WebhookStore, open_store
from tests.e2e import load, write_config
from tests.helpers import MosquittoProcess, MqttRecorder, SimulatorProcess, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
TENANTS = ("acme", "globex", "umbrella", "initech")
TIERS = {"acme": "shared", "globex": "dedicated", "umbrella": "dedicated", "initech": "database"}


def _config(
    tmp_path: Path,
    server: PostgresServer,
    dsn: str,
    *,
    devices: int = 0,
    mqtt_port: int = 1,
    modbus_port: int = 1,
) -> Path:
    """A gateway on PostgreSQL; the password in a private file referenced as `file:`."""
    secret = tmp_path / "pg-password"
    secret.write_text(server.password + "\n")
    secret.chmod(0o600)
    path = write_config(
        tmp_path / "edge.toml", mqtt_port=mqtt_port, modbus_port=modbus_port, devices=devices, tenants=TENANTS
    )
    text = path.read_text().replace("[storage]\n", '[storage]\nbackend = "postgresql"\n')
    for tenant, tier in TIERS.items():
        text = text.replace(f'id = "{tenant}"\n', f'id = "{tenant}"\nstorage = "{tier}"\n')
    text += f'[storage.postgresql]\ndsn = "{dsn}"\npassword = "file:{secret.name}"\n'
    path.write_text(text)
    return path


def _as_role(server: PostgresServer, dsn: str, role: str, query: str) -> list[tuple[object, ...]]:
    """A raw query as a tenant's own role, as an operator or an attacker with that role would run it."""
    with psycopg.connect(dsn, password=server.password, autocommit=True) as db:
        db.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        return list(db.execute(query).fetchall())


@pytest.fixture
def database(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    return postgres.create_database(f"gw_{abs(hash(request.node.name)) % 10**8}")


@pytest.fixture
async def configured(
    tmp_path: Path, postgres: PostgresServer, database: str
) -> AsyncIterator[tuple[LoadedConfig, OutboxStore]]:
    """The outbox a gateway with this file's configuration opens (every tier), open for the test."""
    loaded, _ = load(_config(tmp_path, postgres, database))
    outbox = build_outbox(loaded.config, loaded.data_dir, commit_interval=0.001)
    await outbox.open()
    yield loaded, outbox
    await outbox.close()


def _telemetry(tenant: str, seq: int) -> Event:
    return make_event(
        type=TELEMETRY, source="/gw/t", subject=f"roof/{tenant}-1", tenant=tenant, time=1000.0 + seq,
        data={"n": seq}, device=f"{tenant}-1", sequence=seq,
    )  # fmt: skip


async def test_each_tier_keeps_its_tenants_rows_where_it_says_and_roles_cannot_cross(
    configured: tuple[LoadedConfig, OutboxStore], postgres: PostgresServer, database: str
) -> None:
    loaded, outbox = configured
    for tenant in TENANTS:
        with tenant_scope(TenantContext(tenant)):
            for seq in (1, 2, 3):
                await outbox.append_durable(_telemetry(tenant, seq))
            assert [e.sequence for e in await outbox.read_after(0, 10)] == [1, 2, 3]
            outbox.set_cursor("mqtt", 2)
    assert await outbox.last_sequences() == {(t, f"{t}-1"): 3 for t in TENANTS}
    await outbox.close()  # cursors are persisted with the next commit, or at close

    def tenants_in(dsn: str, schema: str) -> set[str]:
        with psycopg.connect(dsn, password=postgres.password) as db:
            query = sql.SQL("SELECT DISTINCT tenant FROM {}.outbox").format(sql.Identifier(schema))
            return {str(t) for (t,) in db.execute(query).fetchall()}

    assert tenants_in(database, "edge") == {"acme"}  # shared tables: the tenant filter tells rows apart
    assert tenants_in(database, "edge_globex") == {"globex"}
    assert tenants_in(database, "edge_umbrella") == {"umbrella"}
    initech = pg_place(loaded.config.storage, loaded.config.tenants[3])
    assert initech.dbname == f"{PgPlace(database, None, 'edge').dbname}_initech"
    assert tenants_in(initech.conninfo, "edge") == {"initech"}

    # globex's role reads its own schema, and PostgreSQL refuses it every other tenant's rows
    assert _as_role(postgres, database, "edge_globex", "SELECT COUNT(*) FROM edge_globex.outbox") == [(3,)]
    for other in ("edge.outbox", "edge_umbrella.outbox", "edge_umbrella.cursors"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _as_role(postgres, database, "edge_globex", f"SELECT * FROM {other}")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _as_role(postgres, database, "edge_umbrella", "DELETE FROM edge_globex.outbox")

    # `edge sync status`'s view of a tenant opens that tenant's store, whatever its tier
    for tenant in TENANTS:
        with (
            tenant_scope(TenantContext(tenant)),
            open_inspector(loaded.config, loaded.data_dir, tenant=tenant) as view,
        ):
            assert view.last_position() > 0 and view.usage()[0] == 3
            assert view.summary("mqtt").backlog == 1


async def test_webhook_cursors_and_dead_letters_live_in_the_tenants_postgresql_store(
    configured: tuple[LoadedConfig, OutboxStore], postgres: PostgresServer, database: str
) -> None:
    loaded, outbox = configured
    globex = TenantContext("globex")  # dedicated: schema edge_globex
    with tenant_scope(globex):
        for seq in (1, 2):
            newest = await outbox.append_durable(_telemetry("globex", seq))
        with open_store(loaded) as store:
            created = store.add("https://hooks.example.com/in")
        consumer = created.subscription.consumer
        assert await outbox.cursor(consumer) == newest  # starts at the newest event: no history
        [row] = await outbox.read_after(0, 1)
        await outbox.dead_letter(consumer, [(row, "receiver answered 410")])
        with open_store(loaded) as store:
            [dead] = store.dead_letters(created.subscription.id)
            assert dead.position == row.position and dead.reason == "receiver answered 410"
            assert store.replay(created.subscription.id) == 1
            store.remove(created.subscription.id)
        assert await outbox.cursor(consumer) == 0 and await outbox.dead_letters(consumer) == []
    rows = _as_role(postgres, database, "edge_globex", "SELECT COUNT(*) FROM edge_globex.cursors")
    assert rows == [(0,)]  # it was in globex's own schema, and is gone from there


async def test_webhook_subscriptions_live_in_each_tenants_place_and_move_there_from_the_sqlite_file(
    configured: tuple[LoadedConfig, OutboxStore], postgres: PostgresServer, database: str
) -> None:
    """Subscriptions a gateway kept in its SQLite file before its storage moved to PostgreSQL are moved once,
    each tenant's to its own place (a dedicated tenant's URL and secret into its own schema)."""
    loaded, _ = configured
    old = WebhookStore(loaded.data_dir / "outbox.db", DestinationPolicy())  # as a SQLite gateway kept them
    made = {}
    for tenant in ("acme", "globex"):
        with tenant_scope(TenantContext(tenant)):
            made[tenant] = old.add(f"https://hooks.example.com/{tenant}")
    old.close()
    for tenant in ("acme", "globex"):
        with open_store(loaded) as store, tenant_scope(TenantContext(tenant)):
            [moved] = store.list()
            assert moved == made[tenant].subscription
            assert store.signing_secrets(moved.id) == [made[tenant].secret]
            store.remove(moved.id)
        with open_store(loaded) as store, tenant_scope(TenantContext(tenant)):
            assert store.list() == []  # removed stays removed: the file no longer holds it
    file = sqlite3.connect(loaded.data_dir / "outbox.db")
    assert file.execute("SELECT COUNT(*) FROM webhook_subscriptions").fetchone() == (0,)
    file.close()
    with tenant_scope(TenantContext("globex")), open_store(loaded) as store:
        created = store.add("https://hooks.example.com/globex-2")
    rows = _as_role(
        postgres, database, "edge_globex", "SELECT id, url FROM edge_globex.webhook_subscriptions"
    )
    assert rows == [(created.subscription.id, "https://hooks.example.com/globex-2")]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the shared schema's are not globex's
        _as_role(postgres, database, "edge_globex", "SELECT * FROM edge.webhook_subscriptions")


async def test_edge_webhook_add_works_before_any_gateway_ran_on_the_database(
    tmp_path: Path, postgres: PostgresServer, database: str
) -> None:
    """The CLI's case on a fresh database, called from a running event loop as the API would: the tenant's place
    and its outbox are prepared first, so the subscription's cursor has its table."""
    loaded, _ = load(_config(tmp_path, postgres, database))
    for tenant in ("acme", "initech"):  # shared tables; a database of its own, created now
        with open_store(loaded) as store, tenant_scope(TenantContext(tenant)):
            created = store.add(f"https://hooks.example.com/{tenant}")
            assert [s.id for s in store.list()] == [created.subscription.id]


def test_the_password_is_only_ever_a_reference(tmp_path: Path, postgres: PostgresServer) -> None:
    path = _config(tmp_path, postgres, postgres.dsn())
    text = path.read_text()
    path.write_text(text.replace('password = "file:pg-password"', f'password = "{postgres.password}"'))
    with pytest.raises(ConfigError, match=r"storage.postgresql.password.*must be a reference"):
        load(path)
    with_password = postgres.dsn().replace("edge@", f"edge:{postgres.password}@")
    path.write_text(text.replace(postgres.dsn(), with_password))
    with pytest.raises(ConfigError, match="dsn must not contain the password"):
        load(path)
    path.write_text(text.replace('password = "file:pg-password"', 'password = "env:EDGE_TEST_NO_SUCH_VAR"'))
    with pytest.raises(ConfigError, match="EDGE_TEST_NO_SUCH_VAR is not set"):
        load(path)
    sqlite = text.replace('backend = "postgresql"\n', "")
    path.write_text(sqlite)
    with pytest.raises(ConfigError, match="storage 'database' needs"):
        load(path)


@pytest.fixture
def simulator() -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(free_port(), 4, ["--sim-time", "12:00"])
    sim.start()
    yield sim
    sim.stop()


def _gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "-c", str(config), "--log-level", "WARNING"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _stored(loaded: LoadedConfig) -> dict[str, tuple[str, str | None, int | None]]:
    """id -> (tenant, device, sequence) of every event stored, in every tier's store."""
    rows: dict[str, tuple[str, str | None, int | None]] = {}
    for tenant in loaded.config.tenants:
        place = pg_place(loaded.config.storage, tenant)
        with psycopg.connect(place.conninfo, password=place.password) as db:
            query = sql.SQL("SELECT id, tenant, device, sequence FROM {}.outbox WHERE tenant = %s").format(
                sql.Identifier(place.schema)
            )
            rows.update({i: (t, d, s) for i, t, d, s in db.execute(query, (tenant.id,)).fetchall()})
    return rows


def _published(recorder: MqttRecorder) -> dict[str, tuple[str, int]]:
    """id -> (device, sequence) of the telemetry events a local MQTT client received."""
    got = {}
    for _, payload, _ in recorder.snapshot():
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("type") == TELEMETRY and "sequence" in event:
            got[str(event["id"])] = (str(event["data"]["device"]), int(event["sequence"]))
    return got


async def test_kill_9_of_the_gateway_loses_no_published_event_and_sequences_continue(
    tmp_path: Path,
    postgres: PostgresServer,
    database: str,
    mosquitto: MosquittoProcess,
    simulator: SimulatorProcess,
) -> None:
    config = _config(
        tmp_path, postgres, database, devices=4, mqtt_port=mosquitto.port, modbus_port=simulator.port
    )
    loaded, _ = load(config)
    recorder = MqttRecorder(mosquitto.port, "edge/#")
    try:
        for round_ in (1, 2):
            gateway = _gateway(config, tmp_path / "gateway.log")
            wanted = len(_published(recorder)) + 40
            wait_until(lambda: len(_published(recorder)) >= wanted, 30, "telemetry published")  # noqa: B023
            os.kill(gateway.pid, signal.SIGKILL)
            gateway.wait(10)
            published, stored = _published(recorder), _stored(loaded)
            missing = set(published) - set(stored)
            assert not missing, f"round {round_}: {len(missing)} published events are not in PostgreSQL"
        per_device: dict[str, list[int]] = defaultdict(list)
        for _, device, sequence in stored.values():
            if (
                device is not None and sequence is not None
            ):  # device telemetry (not the gateway's own reports)
                per_device[device].append(sequence)
        assert len(per_device) == 4
        for device, sequences in per_device.items():
            # one number per event across the kill and restart: never reused, never going back
            assert len(sequences) == len(set(sequences)), device
    finally:
        recorder.close()
    await asyncio.sleep(0)


async def test_module_state_is_kept_in_postgresql_and_read_only_for_the_cli(
    tmp_path: Path, postgres: PostgresServer, database: str
) -> None:
    loaded, _ = load(_config(tmp_path, postgres, database))
    with tenant_scope(TenantContext("acme")):
        async with module_store(loaded.config, loaded.data_dir, "billing") as store:  # what the gateway opens
            assert await store.apply({"total/2026-11/roof": {"kwh": 12.5}}, once="event-1")
        async with open_module_store(ConfiguredGateway(loaded.path, loaded), "billing") as report:
            assert await report.items("total/") == [("total/2026-11/roof", {"kwh": 12.5})]
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                await report.put("total/2026-11/roof", {"kwh": 0})
    assert not (loaded.data_dir / "modules").exists()  # nothing of it in the data directory


def test_an_unreachable_postgresql_at_start_is_named_and_exits_7(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    nowhere = f"postgresql://edge@127.0.0.1:{free_port()}/edge"  # nothing listens there
    config = _config(tmp_path, postgres, nowhere)
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli", "run", "-c", str(config)],
        cwd=ROOT, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 7, done.stderr.decode()
    err = done.stderr.decode()
    assert (
        f"cannot reach the outbox at postgresql://127.0.0.1:{nowhere.rsplit(':', 1)[1].split('/')[0]}/edge"
        in err
    )
    assert postgres.password not in err
