"""Storage tiers per tenant against a real gateway: a dedicated tenant's events live in its own file, tenants
move between tiers without losing or repeating an event, and one tenant is exported or erased alone."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.gateway import Gateway
from edge.outbox.router import misplaced_tenants
from edge.outbox.sqlite import SqliteOutbox
from edge.outbox.tenant_ops import has_rows, move_tenant
from edge.sdk.events import make_event
from edge.sdk.tenancy import TenantContext, tenant_scope
from tests.e2e import load, write_config
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port

DEVICES = 4  # inv-01, inv-03 for acme; inv-02, inv-04 for globex


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(free_port(), DEVICES, ["--sim-time", "12:00"])
    sim.start()
    yield sim
    sim.stop()


def _rows(db: Path) -> list[tuple[str, str, str | None, int | None]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT id, tenant, device, sequence FROM outbox ORDER BY position").fetchall()


async def _run(config: Path, events: int) -> None:
    loaded, registry = load(config)
    gateway = Gateway(loaded, registry)
    await gateway.start()
    try:
        target = gateway.outbox.committed_events + events
        for _ in range(400):
            if gateway.outbox.committed_events >= target and await gateway.backlog() == 0:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the gateway did not store and publish in time")
    finally:
        await gateway.stop()


async def _mqtt_backlog(db: Path, tenant: str) -> int:
    outbox = SqliteOutbox(db)
    await outbox.open()
    try:
        with tenant_scope(TenantContext(tenant)):
            return await outbox.backlog("mqtt")
    finally:
        await outbox.close()


def _cli(*args: str, input: str | None = None) -> str:
    result = CliRunner().invoke(app, list(args), input=input)
    assert result.exit_code == 0, result.output
    return result.output


def _assert_sequences(rows: list[tuple[str, str, str | None, int | None]], tenant: str) -> None:
    per_device: dict[str, list[int]] = defaultdict(list)
    for _, owner, device, sequence in rows:
        if owner == tenant and device is not None and sequence is not None:
            per_device[device].append(sequence)
    assert len(per_device) == DEVICES // 2
    for device, sequences in per_device.items():
        assert sorted(sequences) == list(range(1, len(sequences) + 1)), device  # no gap, no repeat


async def test_dedicated_tier_move_both_ways_export_and_erase(
    tmp_path: Path, mosquitto: MosquittoProcess, simulator: SimulatorProcess
) -> None:
    config = write_config(
        tmp_path / "edge.toml",
        mqtt_port=mosquitto.port,
        modbus_port=simulator.port,
        devices=DEVICES,
        poll_interval=0.02,
        prefix="tiers",
    )
    text = config.read_text().replace('id = "acme"\n', 'id = "acme"\nstorage = "dedicated"\n')
    config.write_text("# operator's comment, kept by moves\n" + text)
    shared, acme_db = tmp_path / "data" / "outbox.db", tmp_path / "data" / "tenants" / "acme.db"

    await _run(config, 80)
    assert {t for _, t, _, _ in _rows(acme_db)} == {"acme"}
    assert {t for _, t, _, _ in _rows(shared)} == {"globex"}
    acme_before = _rows(acme_db)
    backlog_before = await _mqtt_backlog(acme_db, "acme")

    out = await asyncio.to_thread(_cli, "tenant", "move", "acme", "--to", "shared", "-c", str(config))
    assert f"{len(acme_before)} events moved" in out
    assert not acme_db.exists() and 'storage = "dedicated"' not in config.read_text()
    assert config.read_text().startswith("# operator's comment")
    moved = [r for r in _rows(shared) if r[1] == "acme"]
    assert [r[0] for r in moved] == [r[0] for r in acme_before]  # every event, in order
    # cursors renumbered with the rows: the publisher resumes exactly where it stopped, nothing sent twice
    assert await _mqtt_backlog(shared, "acme") == backlog_before <= 2

    await asyncio.to_thread(_cli, "tenant", "move", "globex", "--to", "dedicated", "-c", str(config))
    globex_db = tmp_path / "data" / "tenants" / "globex.db"
    await _run(config, 80)
    _assert_sequences(_rows(shared), "acme")
    _assert_sequences(_rows(globex_db), "globex")
    assert {t for _, t, _, _ in _rows(shared)} == {"acme"}

    export = tmp_path / "acme.jsonl"
    await asyncio.to_thread(_cli, "tenant", "export", "acme", "-o", str(export), "-c", str(config))
    lines = [orjson.loads(line) for line in export.read_bytes().splitlines()]
    assert len(lines) == len([r for r in _rows(shared) if r[1] == "acme"])
    assert {e["tenantid"] for e in lines} == {"acme"} and lines[0]["specversion"] == "1.0"

    refused = CliRunner().invoke(app, ["tenant", "erase", "acme", "-c", str(config)], input="globex\n")
    assert refused.exit_code == 1 and _rows(shared)
    some_id = _rows(shared)[0][0].encode()
    await asyncio.to_thread(_cli, "tenant", "erase", "acme", "-c", str(config), input="acme\n")
    assert _rows(shared) == []
    assert all(some_id not in p.read_bytes() for p in shared.parent.glob("outbox.db*"))  # gone from the file
    await asyncio.to_thread(_cli, "tenant", "erase", "globex", "-c", str(config), "--yes")
    assert not globex_db.exists()


async def test_positions_never_go_back_after_retention_emptied_the_outbox(tmp_path: Path) -> None:
    def event() -> object:
        return make_event(
            type="org.edgegw.telemetry", source="/gw", subject="s", tenant="acme", time=1.0, data={}
        )

    outbox = SqliteOutbox(tmp_path / "outbox.db")
    await outbox.open()
    with tenant_scope(TenantContext("acme")):
        for _ in range(5):
            await outbox.append_durable(event())  # type: ignore[arg-type]
        outbox.set_cursor("mqtt", 5)
        await outbox.delete_through(5, 5, None)  # retention: everything was delivered
    await outbox.close()
    outbox = SqliteOutbox(tmp_path / "outbox.db")
    await outbox.open()
    try:
        with tenant_scope(TenantContext("acme")):
            assert await outbox.append_durable(event()) == 6  # type: ignore[arg-type]
            assert await outbox.backlog("mqtt") == 1  # the new event is not hidden behind the cursor
    finally:
        await outbox.close()


async def test_moving_into_the_shared_database_renumbers_rows_cursors_and_dead_letters_together(
    tmp_path: Path,
) -> None:
    def event(tenant: str, sequence: int) -> object:
        return make_event(
            type="org.edgegw.telemetry",
            source="/gw",
            subject="s/d",
            tenant=tenant,
            time=1.0,
            data={"n": sequence},
            device="d",
            sequence=sequence,
        )

    shared, own = SqliteOutbox(tmp_path / "outbox.db"), SqliteOutbox(tmp_path / "acme.db")
    await shared.open()
    await own.open()
    with tenant_scope(TenantContext("globex")):
        for n in range(1, 21):
            await shared.append_durable(event("globex", n))  # type: ignore[arg-type]
    with tenant_scope(TenantContext("acme")):
        for n in range(1, 11):
            await own.append_durable(event("acme", n))  # type: ignore[arg-type]
        own.set_cursor("mqtt", 6)
        third = (await own.read_after(2, 1))[0]
        await own.dead_letter("module:x:0", [(third, "refused by the receiver")])
    await shared.close()
    await own.close()

    move_tenant("acme", tmp_path / "acme.db", tmp_path / "outbox.db", renumber=True)

    outbox = SqliteOutbox(tmp_path / "outbox.db")
    await outbox.open()
    try:
        with tenant_scope(TenantContext("acme")):
            assert await outbox.backlog("mqtt") == 4
            pending = await outbox.read_after(await outbox.cursor("mqtt"), 100)
            assert [orjson.loads(r.body)["data"]["n"] for r in pending] == [7, 8, 9, 10]
            (dead,) = await outbox.dead_letters()
            assert dead.event.id == third.id and dead.event.position > 20
        with tenant_scope(TenantContext("globex")):
            assert await outbox.count() == 20
    finally:
        await outbox.close()
    assert not has_rows(tmp_path / "acme.db", "acme")


async def test_a_tier_changed_in_the_config_without_a_move_is_reported_at_start(tmp_path: Path) -> None:
    outbox = SqliteOutbox(tmp_path / "outbox.db")
    await outbox.open()
    with tenant_scope(TenantContext("acme")):
        await outbox.append_durable(
            make_event(
                type="org.edgegw.telemetry", source="/gw", subject="s", tenant="acme", time=1.0, data={}
            )
        )
    await outbox.close()
    tiers = {"acme": "dedicated", "globex": "shared"}
    (problem,) = misplaced_tenants(tmp_path, tmp_path / "outbox.db", tiers)
    assert (
        "tenant 'acme' is configured 'dedicated'" in problem
        and "edge tenant move acme --to dedicated" in problem
    )
    assert misplaced_tenants(tmp_path, tmp_path / "outbox.db", {"acme": "shared"}) == []
