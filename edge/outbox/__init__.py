"""The persistence registry: the outbox interface the kernel and plug-ins use, SQLite its default implementation.

Public types: `StoredEvent` (a committed row), `DeadLetter` (a row a consumer refused, with the reason),
`ConsumerStatus` (a consumer's durable progress), `RetentionPolicy` (per-tenant limits of the outbox),
`Dropped` (what a retention step removed or refused) and `OutboxFull` (raised by `append_durable` when a
tenant's quota refuses new events).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from edge.sdk.errors import OutboxFull
from edge.sdk.events import Event, StoredEvent

__all__ = [
    "CommitListener",
    "ConsumerStatus",
    "DeadLetter",
    "Dropped",
    "Outbox",
    "OutboxFull",
    "RetentionPolicy",
    "StoredEvent",
]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event a consumer refused (a poison event), kept with the reason until it is replayed or purged."""

    consumer: str
    event: StoredEvent
    reason: str
    dead_at: float  # outbox clock (wall time, never stepping backwards while the gateway runs)
    attempts: int  # how many times it was refused (replays included)
    replay: bool  # an operator asked for it to be offered to the consumer again


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    consumer: str
    tenant: str
    position: int
    last_success: float | None
    last_failure: float | None
    last_error: str | None
    delivered: int


RetentionAction = Literal["drop_oldest", "refuse_newest"]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How much one tenant may keep in the outbox, and what happens beyond it.

    `max_age`: an event some consumer has not passed after this many seconds in the outbox is dropped.
    `max_bytes`: the tenant's quota (event bytes). Beyond it, rows every consumer has passed go first (not a
    loss); then `policy` decides: `drop_oldest` deletes the oldest undelivered events, `refuse_newest` stores no
    new event until there is room again. `keep_delivered`: seconds of history kept after every consumer passed
    a row (local history, and what the benchmark reads back). Every drop or refusal is counted and reported as
    an `org.edgegw.outbox.dropped` event.
    """

    max_age: float = 7 * 86_400.0
    max_bytes: int = 1 << 30
    policy: RetentionAction = "drop_oldest"
    keep_delivered: float = 600.0


@dataclass(frozen=True, slots=True)
class Dropped:
    """Events a retention step dropped (deleted before every consumer had them) or refused (never stored)."""

    events: int = 0
    bytes: int = 0
    first_time: float | None = None  # sample times of the oldest and newest affected event
    last_time: float | None = None
    last_position: int = 0  # the newest dropped row (0 for refusals: never stored)

    def __add__(self, other: Dropped) -> Dropped:
        times = [t for t in (self.first_time, other.first_time) if t is not None]
        lasts = [t for t in (self.last_time, other.last_time) if t is not None]
        return Dropped(
            self.events + other.events,
            self.bytes + other.bytes,
            min(times) if times else None,
            max(lasts) if lasts else None,
            max(self.last_position, other.last_position),
        )


CommitListener = Callable[[Sequence[Event], int], None]


class Outbox(Protocol):
    """Durable, append-only event log with per-consumer cursors. Reads are scoped to the current tenant."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def append(self, event: Event) -> None:
        """Queue for the next group commit; waits only when the write queue is full (back-pressure)."""

    async def append_durable(self, event: Event) -> int:
        """Append and wait until the event is committed; returns its position."""

    def add_commit_listener(self, listener: CommitListener) -> None: ...
    async def last_sequences(self) -> dict[tuple[str, str], int]: ...
    def hold(self, consumer: str, tenants: Iterable[str]) -> None:
        """Rows of these tenants stay until `consumer` passed them (or the retention policy drops them)."""

    # tenant-scoped
    async def read_after(
        self, position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[StoredEvent]: ...
    async def cursor(self, consumer: str) -> int: ...
    def set_cursor(self, consumer: str, position: int) -> None: ...
    async def backlog(self, consumer: str) -> int: ...
    async def dead_letter(self, consumer: str, rejected: Sequence[tuple[StoredEvent, str]]) -> None: ...
    async def dead_letters(
        self, consumer: str | None = None, limit: int = 100, replay_only: bool = False
    ) -> list[DeadLetter]: ...
    async def resolve_dead_letters(self, consumer: str, positions: Sequence[int]) -> None: ...
    async def request_replay(self, consumer: str | None = None) -> int: ...
