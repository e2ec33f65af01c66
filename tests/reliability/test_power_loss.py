"""T02, simulated power loss: the real outbox (WAL, `synchronous=FULL`) is written by a forked process that is
SIGKILLed at a random moment; then the writes that came after its last fsync are dropped, and the file must
open with `PRAGMA integrity_check` = ok and hold every event whose commit was acknowledged.

The model: with FULL, SQLite fsyncs the WAL at each commit before `append_durable` returns, so everything up to
the end of the last acknowledged commit is on disk and a power cut can only lose what follows. The writer
records the WAL's size right after each acknowledgement (never below that commit's end); the test then
truncates the WAL at a random point between that size and its end, dropping a torn tail of frames. This does
not model reordered sector writes inside the synced region (only a VFS shim or LazyFS could), see
docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from edge.outbox.sqlite import SqliteOutbox
from edge.sdk.tenancy import TenantContext, tenant_scope
from tests.cloud_harness import telemetry
from tests.reliability.harness import integrity_ok

TENANT = TenantContext("acme")


async def _write(db: Path, acks: Path, producers: int, start: int) -> None:
    outbox = SqliteOutbox(db, synchronous="full", commit_interval=0.002)
    await outbox.open()
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    wal = Path(f"{db}-wal")

    async def produce(n: int) -> None:
        seq = start
        with tenant_scope(TENANT):
            while True:
                seq += 1
                event = telemetry("acme", f"dev-{n}", seq)
                await outbox.append_durable(event)
                # one write() per line: a kill leaves whole lines (page cache survives the process)
                os.write(fd, f"{event.id} {os.stat(wal).st_size}\n".encode())

    await asyncio.wait_for(asyncio.gather(*(produce(n) for n in range(producers))), 10)


def _child(db: Path, acks: Path, start: int) -> None:
    try:
        asyncio.run(_write(db, acks, producers=4, start=start))
    finally:
        os._exit(0)


def power_loss_cycles(tmp_path: Path, cycles: int, seed: int) -> tuple[int, int]:
    """Run `cycles` write/kill/tear/check rounds on one outbox; returns (acked events, torn bytes)."""
    rng = random.Random(seed)
    db = tmp_path / "outbox.db"
    wal = Path(f"{db}-wal")
    acked: set[str] = set()
    torn = 0
    for cycle in range(cycles):
        acks = tmp_path / f"acks-{cycle}"
        pid = os.fork()
        if pid == 0:
            _child(db, acks, start=cycle * 100_000)
        time.sleep(rng.uniform(0.15, 0.6))  # after the open (~0.1 s), mid-stream
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        lines = acks.read_text().splitlines() if acks.exists() else []
        cycle_acks = [line.split() for line in lines if len(line.split()) == 2]
        acked |= {i for i, _ in cycle_acks}
        if cycle_acks and wal.exists():
            synced = max(int(size) for _, size in cycle_acks)
            end = wal.stat().st_size
            if end > synced:
                cut = rng.randint(synced, end)
                os.truncate(wal, cut)
                torn += end - cut
        assert integrity_ok(db) == "ok", f"cycle {cycle}"
        conn = sqlite3.connect(db)
        try:
            stored = {str(r[0]) for r in conn.execute("SELECT id FROM outbox")}
        finally:
            conn.close()
        missing = acked - stored
        assert not missing, f"cycle {cycle}: {len(missing)} acknowledged events lost"
    return len(acked), torn


def test_t02_power_loss_keeps_every_acked_event(tmp_path: Path) -> None:
    acked, torn = power_loss_cycles(tmp_path, cycles=8, seed=2)
    print(f"T02: 8 cycles, {acked} acked events all present, {torn} bytes of WAL torn off")
    assert acked > 100


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_t02_power_loss_100_cycles(tmp_path: Path) -> None:
    acked, torn = power_loss_cycles(tmp_path, cycles=100, seed=3)
    print(f"T02: 100 cycles, {acked} acked events all present, {torn} bytes of WAL torn off")
    assert acked > 1000
