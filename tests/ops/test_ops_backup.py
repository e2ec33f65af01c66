"""Backup while a gateway writes, restore into a fresh directory, run a gateway there: every event of the
backup is there, and each device's sequence continues without a gap or a duplicate."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import stat
import tarfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.bus.access import AccessStore
from edge.bus.broker import EmbeddedBroker
from edge.gateway import Gateway
from edge.ops.backup import BackupError, create_backup, restore_backup
from edge.sdk.certs import write_application_certificate
from tests.e2e import load, write_config
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port, mqtt_connack, until

DEVICES = 3


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(free_port(), DEVICES, ["--sim-time", "12:00"])
    sim.start()
    yield sim
    sim.stop()


def _events(db: Path) -> list[tuple[str, str, str | None, int | None]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT id, tenant, device, sequence FROM outbox ORDER BY position").fetchall()


def _assert_sequences_continue(rows: list[tuple[str, str, str | None, int | None]]) -> None:
    per_device: dict[tuple[str, str], list[int]] = defaultdict(list)
    for _, tenant, device, sequence in rows:
        if device is not None and sequence is not None:
            per_device[(tenant, device)].append(sequence)
    assert len(per_device) == DEVICES
    for key, sequences in per_device.items():
        assert sequences == list(range(sequences[0], sequences[0] + len(sequences))), key


async def _run_until(gateway: Gateway, more_events: int, seconds: float = 20.0) -> None:
    target = gateway.outbox.committed_events + more_events
    await until(
        lambda: gateway.outbox.committed_events >= target, seconds, f"{more_events} more events", step=0.05
    )


async def test_backup_during_load_restores_on_a_fresh_machine_with_every_event_accounted_for(
    tmp_path: Path, mosquitto: MosquittoProcess, simulator: SimulatorProcess
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    config = write_config(
        old / "edge.toml",
        mqtt_port=mosquitto.port,
        modbus_port=simulator.port,
        devices=DEVICES,
        poll_interval=0.02,
    )
    (old / "secrets").mkdir(mode=0o700)
    (old / "secrets" / "webhook.secret").write_text("whsec_c2VjcmV0\n")
    (old / "secrets" / "webhook.secret").chmod(0o600)
    write_application_certificate(old / "data" / "identity", application_uri="urn:t:gw", common_name="gw")
    (old / "data" / "modules").mkdir()
    with sqlite3.connect(old / "data" / "modules" / "alarms.sqlite") as module_db:
        module_db.execute("CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT)")
        module_db.execute("INSERT INTO state VALUES ('active', 'inv-01 overheat')")

    loaded, registry = load(config)
    gateway = Gateway(loaded, registry)
    await gateway.start()
    archive = tmp_path / "backup.tar.gz"
    try:
        await _run_until(gateway, 120)
        manifest = await asyncio.to_thread(
            create_backup, config, loaded.data_dir, "outbox.db", "gw-test", archive
        )
        await _run_until(gateway, 60)  # still writing after the snapshot
    finally:
        await gateway.stop()
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert manifest.files["data/outbox.db"]["events"] >= 120
    assert {
        "config/edge.toml",
        "config/secrets/webhook.secret",
        "data/identity/private_key.pem",
        "data/modules/alarms.sqlite",
    } <= set(manifest.files)

    new = tmp_path / "new-machine" / "etc"
    result = restore_backup(archive, new / "edge.toml")
    assert result.data_dir == (new / "data").resolve()
    restored_db = new / "data" / "outbox.db"
    from_backup = _events(restored_db)
    original = _events(old / "data" / "outbox.db")
    assert len(from_backup) == manifest.files["data/outbox.db"]["events"]
    assert from_backup == original[: len(from_backup)]  # a consistent prefix of what the gateway committed
    assert stat.S_IMODE((new / "secrets" / "webhook.secret").stat().st_mode) == 0o600
    assert (new / "data" / "identity" / "private_key.pem").read_bytes() == (
        old / "data" / "identity" / "private_key.pem"
    ).read_bytes()
    with sqlite3.connect(new / "data" / "modules" / "alarms.sqlite") as module_db:
        assert module_db.execute("SELECT value FROM state").fetchall() == [("inv-01 overheat",)]

    loaded, registry = load(new / "edge.toml")
    gateway = Gateway(loaded, registry)
    await gateway.start()
    try:
        await _run_until(gateway, 60)
    finally:
        await gateway.stop()
    after = _events(restored_db)
    assert after[: len(from_backup)] == from_backup
    assert len({row[0] for row in after}) == len(after)  # no event id twice
    _assert_sequences_continue(after)

    with pytest.raises(BackupError, match="refusing to overwrite"):
        restore_backup(archive, new / "edge.toml")


def test_a_damaged_archive_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "edge.toml").write_text('[gateway]\nid = "gw"\ndata_dir = "data"\n')
    (tmp_path / "data").mkdir()
    with sqlite3.connect(tmp_path / "data" / "outbox.db") as db:
        db.execute("CREATE TABLE outbox (id TEXT)")
    archive = tmp_path / "b.tar.gz"
    create_backup(tmp_path / "edge.toml", tmp_path / "data", "outbox.db", "gw", archive)
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(damaged, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "data/outbox.db":
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.addfile(member, io.BytesIO(data))
    with pytest.raises(BackupError, match=r"data/outbox\.db is damaged"):
        restore_backup(damaged, tmp_path / "restored" / "edge.toml")
    assert not (tmp_path / "restored" / "edge.toml").exists()
    assert not (tmp_path / "restored" / "data").exists()


async def test_broker_users_survive_a_restore_at_0600_and_the_broker_stays_closed(tmp_path: Path) -> None:
    old = tmp_path / "old"
    (old / "data").mkdir(parents=True)
    (old / "edge.toml").write_text('[gateway]\nid = "gw"\ndata_dir = "data"\n')
    _, password = AccessStore(old / "data" / "broker", "edge").add("acme", "bms")
    archive = tmp_path / "b.tar.gz"
    create_backup(old / "edge.toml", old / "data", "outbox.db", "gw", archive)
    kept = ["data/broker/access.json", "data/broker/passwd", "data/broker/acl", "data/broker-auth-required"]
    with tarfile.open(archive) as tar:
        modes = {member.name: member.mode for member in tar.getmembers()}
    assert all(modes.get(name) == 0o600 for name in kept), modes

    result = restore_backup(archive, tmp_path / "new" / "edge.toml")
    for name in kept:
        assert stat.S_IMODE((result.data_dir / name.removeprefix("data/")).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(result.data_dir.stat().st_mode) == 0o700
    broker_dir = result.data_dir / "broker"
    broker = EmbeddedBroker(free_port(), broker_dir, access=AccessStore(broker_dir, "edge"))
    await broker.start()
    try:
        assert mqtt_connack(broker.port, "bms@acme", password) == 0  # the user came back with its password
        assert mqtt_connack(broker.port, None, None) != 0  # and no one gets in anonymously
    finally:
        await broker.stop()
