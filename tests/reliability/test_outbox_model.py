"""T12, a stateful model of the outbox (Hypothesis rule-based state machine on a real SQLite file): producers
enqueue (durably or not), a consumer delivers, fails (nack) or dead-letters batches, and the process restarts
cleanly or crashes (writer stopped mid-work, unsaved cursors and uncommitted events gone). Whatever the
sequence, "acked is a subset of delivered, dead-lettered and pending" holds: an event whose commit was acknowledged is
either delivered, kept with a reason, or still offered to the consumer.

`EDGE_MODEL_EXAMPLES` sets the number of sequences (default 8 in the suite; the long run uses 2 000).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edge.outbox.sqlite import SqliteOutbox
from edge.sdk.tenancy import TenantContext, tenant_scope
from tests.cloud_harness import telemetry

CONSUMER = "model"
TENANT = TenantContext("acme")
EXAMPLES = int(os.environ.get("EDGE_MODEL_EXAMPLES", "8"))


async def _crash(outbox: SqliteOutbox) -> None:
    """What kill -9 leaves: the writer stops where it is; queued events and unsaved cursors vanish.
    (Reaches into the outbox on purpose: there is no public way to die.)"""
    task = outbox._task
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    for conn in (outbox._writer, outbox._reader):
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


class OutboxModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-model-"))
        self.loop = asyncio.new_event_loop()
        self.outbox = self._open()
        self.acked: set[str] = set()
        self.delivered: set[str] = set()
        self.dead: set[str] = set()
        self.seq = 0
        self.crashes = 0

    def _run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def _open(self) -> SqliteOutbox:
        outbox = SqliteOutbox(self.dir / "outbox.db", commit_interval=0.001)
        self._run(outbox.open())
        return outbox

    def _event(self, device: int):  # type: ignore[no-untyped-def]
        self.seq += 1
        return telemetry("acme", f"dev-{device}", self.seq, points=1)

    @rule(device=st.integers(0, 2), n=st.integers(1, 5))
    def enqueue_durable(self, device: int, n: int) -> None:
        async def go() -> None:
            with tenant_scope(TENANT):
                for _ in range(n):
                    event = self._event(device)
                    await self.outbox.append_durable(event)
                    self.acked.add(event.id)

        self._run(go())

    @rule(n=st.integers(1, 5))
    def enqueue_queued(self, n: int) -> None:
        """Not acknowledged: may be lost in a crash, never counted as acked."""

        async def go() -> None:
            with tenant_scope(TENANT):
                for _ in range(n):
                    await self.outbox.append(self._event(0))

        self._run(go())

    def _batch(self, limit: int):  # type: ignore[no-untyped-def]
        async def go():  # type: ignore[no-untyped-def]
            with tenant_scope(TENANT):
                return await self.outbox.read_after(await self.outbox.cursor(CONSUMER), limit)

        return self._run(go())

    @rule(limit=st.integers(1, 8))
    def deliver(self, limit: int) -> None:
        batch = self._batch(limit)
        self.delivered.update(e.id for e in batch)
        if batch:
            with tenant_scope(TENANT):
                self.outbox.set_cursor(CONSUMER, batch[-1].position)

    @rule(limit=st.integers(1, 8))
    def nack(self, limit: int) -> None:
        self._batch(limit)  # the upload failed: the cursor stays, the batch comes again

    @rule(limit=st.integers(1, 3))
    def dead_letter(self, limit: int) -> None:
        batch = self._batch(limit)
        if not batch:
            return

        async def go() -> None:
            with tenant_scope(TENANT):
                await self.outbox.dead_letter(CONSUMER, [(e, "poison: refused by the model") for e in batch])
                self.outbox.set_cursor(CONSUMER, batch[-1].position)

        self._run(go())
        self.dead.update(e.id for e in batch)

    @rule()
    def restart(self) -> None:
        self._run(self.outbox.close())
        self.outbox = self._open()

    @precondition(lambda self: self.crashes < 5)
    @rule()
    def crash(self) -> None:
        self._run(_crash(self.outbox))
        self.crashes += 1
        self.outbox = self._open()

    @invariant()
    def acked_events_are_delivered_dead_or_pending(self) -> None:
        async def pending() -> set[str]:
            with tenant_scope(TENANT):
                rows = await self.outbox.read_after(await self.outbox.cursor(CONSUMER), 1_000_000)
                return {e.id for e in rows}

        missing = self.acked - self.delivered - self.dead - self._run(pending())
        assert not missing, f"{len(missing)} acked events neither delivered, dead-lettered nor pending"

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self.outbox.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)


OutboxModel.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=25,
    deadline=None,  # fsync'd commits on a shared disk: seconds under load, not a decoder's budget
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=EXAMPLES <= 8,
)
TestOutboxModel = OutboxModel.TestCase
