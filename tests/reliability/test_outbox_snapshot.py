"""Found by the soak (a broker kill, then four acked events never reached the cloud): a read on the outbox's
shared reader connection that starts while another read's statement is still open runs in that older
snapshot, so a consumer that noted `last_position` and then read could pass rows it never saw. Consumers rely
on "everything committed before my read is in my read"; this checks it under concurrent readers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.outbox.sqlite import SqliteOutbox
from edge.sdk.tenancy import TenantContext, tenant_scope
from tests.cloud_harness import telemetry

TENANT = TenantContext("acme")


async def test_a_read_sees_every_commit_made_before_it_despite_concurrent_reads(tmp_path: Path) -> None:
    outbox = SqliteOutbox(tmp_path / "outbox.db", commit_interval=0.001, synchronous="normal")
    await outbox.open()
    stop = asyncio.Event()
    misses: list[tuple[int, int]] = []
    checks = 0

    async def produce() -> None:
        with tenant_scope(TENANT):
            seq = 0
            while not stop.is_set():
                seq += 1
                await outbox.append_durable(telemetry("acme", "dev", seq, points=1))

    async def noisy_reader() -> None:  # another consumer reading big batches on the same connection
        with tenant_scope(TENANT):
            while not stop.is_set():
                await outbox.read_after(max(0, outbox.last_position - 300), 5_000)

    async def consumer() -> None:
        nonlocal checks
        with tenant_scope(TENANT):
            while not stop.is_set():
                scanned = outbox.last_position
                rows = await outbox.read_after(max(0, scanned - 50), 100_000)
                seen = rows[-1].position if rows else 0
                checks += 1
                if seen < scanned:
                    misses.append((scanned, seen))
                await asyncio.sleep(0)

    with tenant_scope(TENANT):
        for seq in range(2_000):
            await outbox.append(telemetry("acme", "seed", seq + 1, points=1))
    readers = [noisy_reader() for _ in range(6)]
    tasks = [asyncio.create_task(t) for t in (produce(), produce(), *readers, consumer(), consumer())]
    await asyncio.sleep(2.0)
    stop.set()
    await asyncio.gather(*tasks)
    await outbox.close()
    assert checks > 20
    assert not misses, f"{len(misses)} of {checks} reads missed rows committed before them, e.g. {misses[:3]}"
