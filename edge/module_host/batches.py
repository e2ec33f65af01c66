"""Durable batch consumers: the cursor, retry, dead-letter and replay rules of `subscribe_batches`, shared by
modules and kernel services (webhooks)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from edge.module_host.context import BatchSubscription
from edge.module_host.versions import VersionGate
from edge.outbox import OutboxStore
from edge.outbox.consumer import DurableConsumer
from edge.sdk.backoff import Backoff
from edge.sdk.events import StoredEvent
from edge.sdk.modules import (
    RETRY_BASE,
    RETRY_CAP,
    BatchHandler,
    Rejected,
    RetryLater,
)
from edge.sdk.tenancy import TenantContext, tenant_scope

log = logging.getLogger(__name__)

_REPLAY_CHECK = 2.0  # seconds between looks for dead letters an operator asked to replay


class ConsumerCounters(Protocol):
    """What a batch consumer counts as it goes (a `HostedModule`, or a webhook subscription's stats)."""

    name: str
    handled: int
    handler_errors: int
    retries: int
    dead_lettered: int

    @property
    def gate(self) -> VersionGate | None:
        """The data versions the consumer takes (None: every version, as stored)."""
        ...


async def run_batch_consumer(
    outbox: OutboxStore,
    counters: ConsumerCounters,
    tenant: TenantContext,
    consumer: str,
    types: Sequence[str] | None,
    handler: BatchHandler,
    *,
    max_batch: int = 100,
    max_wait: float = 0.0,
) -> None:
    """Run one durable batch consumer outside a module (kernel services such as webhooks), with the same
    cursor, retry, dead-letter and replay rules as `ModuleContext.subscribe_batches`. Runs until cancelled."""
    sub = BatchSubscription(consumer, tuple(types or ()), handler, max_batch, max_wait, None, None)
    await BatchConsumer(outbox, counters, tenant, consumer, sub).run()


class BatchConsumer:
    """One tenant's batch subscription: the retry, dead-letter and replay rules over a `DurableConsumer`,
    which reads the batches (lingering for a fuller one, reading ahead during a backlog) and keeps the cursor."""

    def __init__(
        self,
        outbox: OutboxStore,
        hosted: ConsumerCounters,
        tenant: TenantContext,
        consumer: str,
        sub: BatchSubscription,
    ) -> None:
        self._outbox = outbox
        self._hosted = hosted
        self._tenant = tenant
        self._consumer = consumer
        self._sub = sub
        self._backoff = Backoff(RETRY_BASE, RETRY_CAP)
        self._failing = False
        self._retries = 0
        self._next_replay_check = 0.0
        # Only this consumer makes its dead letters, and a replay can only be asked for letters that exist:
        # while it has none (looked up once at start), there is nothing to look for every `_REPLAY_CHECK`.
        self._may_have_dead_letters = True

    async def run(self) -> None:
        sub = self._sub
        events = DurableConsumer(
            self._outbox,
            self._tenant,
            self._consumer,
            types=sub.types,
            max_batch=sub.max_batch,
            max_wait=sub.max_wait,
            max_bytes=sub.max_bytes,
            yield_idle=True,  # look for dead letters to replay while idle too
        )
        with tenant_scope(self._tenant):
            self._may_have_dead_letters = bool(await self._outbox.dead_letters(self._consumer, 1))
            async with events:
                async for batch in events:
                    await self._replay_dead_letters()
                    if not batch.events:
                        continue
                    retries = self._retries
                    await self._deliver(batch.events, batch.after)
                    events.ack(batch)
                    if self._retries != retries:
                        events.rewind()  # read before a long wait: retention may have removed rows since

    async def _deliver(self, batch: list[StoredEvent], position: int) -> None:
        """Offer the batch (read after `position`) until the handler accepts it, wholly or with rejections."""
        while True:
            outcome = await self._offer(batch)
            if not isinstance(outcome, _Retry):
                rejected = outcome.reasons if isinstance(outcome, Rejected) else {}
                await self._settle(batch, rejected)
                return
            # the same events again, minus any that retention removed meanwhile
            last = batch[-1].position
            rows = await self._outbox.read_after(position, len(batch), self._sub.types)
            batch = [r for r in rows if r.position <= last]
            if not batch:
                return

    async def _offer(self, batch: Sequence[StoredEvent]) -> Rejected | _Retry | None:
        """One handler call; returns its verdict, or `_RETRY` after waiting as it (or the backoff) asked."""
        hosted = self._hosted
        gate = hosted.gate
        if gate is not None:
            admitted = [e for e in (gate.admit(row) for row in batch) if e is not None]
            if not admitted:
                return None  # nothing of a version the module handles: passed, counted by the gate
            batch = admitted
        try:
            outcome = await self._sub.handler(batch)
        except RetryLater as retry:
            delay = retry.after if retry.after is not None else self._backoff.next_delay()
            reason = retry.reason or "retry later"
        except Exception as exc:  # a bug in the handler: log it, keep the events, try again later
            hosted.handler_errors += 1
            delay, reason = self._backoff.next_delay(), f"handler error: {type(exc).__name__}: {exc}"
            if not self._failing:
                log.exception("module %s failed on a batch of %d events", hosted.name, len(batch))
        else:
            if self._failing:
                log.info("module %s delivers again (%s)", hosted.name, self._consumer)
            self._failing = False
            self._backoff.reset()
            return outcome
        hosted.retries += 1
        self._retries += 1
        self._outbox.record_failure(self._consumer, reason)
        if not self._failing:
            log.warning(
                "module %s: batch of %d not delivered (%s); retrying", hosted.name, len(batch), reason
            )
        self._failing = True
        await asyncio.sleep(max(0.0, delay))
        return _RETRY

    async def _settle(self, batch: Sequence[StoredEvent], rejected: Mapping[int, str]) -> None:
        by_position = {row.position: row for row in batch}
        dead = [(by_position[p], why) for p, why in rejected.items() if p in by_position]
        if len(dead) < len(rejected):
            log.warning("module %s rejected positions outside its batch; ignored", self._hosted.name)
        if dead:
            self._may_have_dead_letters = True
            await self._outbox.dead_letter(self._consumer, dead)
            self._hosted.dead_lettered += len(dead)
            log.warning(
                "module %s refused %d events (first: %s: %s); kept as dead letters",
                self._hosted.name,
                len(dead),
                dead[0][0].id,
                dead[0][1],
            )
        self._hosted.handled += len(batch) - len(dead)
        self._outbox.record_success(self._consumer, len(batch) - len(dead))

    async def _replay_dead_letters(self) -> None:
        """Offer again what an operator asked to replay (`edge sync replay-dead-letters`)."""
        now = time.monotonic()
        if now < self._next_replay_check or not self._may_have_dead_letters:
            return
        self._next_replay_check = now + _REPLAY_CHECK
        letters = await self._outbox.dead_letters(self._consumer, self._sub.max_batch, replay_only=True)
        if not letters:
            return
        batch = [letter.event for letter in letters]
        log.info("module %s: replaying %d dead letters", self._hosted.name, len(batch))
        while True:
            outcome = await self._offer(batch)
            if not isinstance(outcome, _Retry):
                break
        rejected = outcome.reasons if isinstance(outcome, Rejected) else {}
        still_bad = [(row, rejected[row.position]) for row in batch if row.position in rejected]
        if still_bad:
            await self._outbox.dead_letter(self._consumer, still_bad)
        accepted = [row.position for row in batch if row.position not in rejected]
        await self._outbox.resolve_dead_letters(self._consumer, accepted)
        self._outbox.record_success(self._consumer, len(accepted))
        self._next_replay_check = 0.0  # there may be more


class _Retry:
    """The handler asked for (or needs) another try; the wait is already done."""


_RETRY = _Retry()
