"""The persistence registry: the outbox interface the kernel and plug-ins use (`OutboxStore`), with two backends:
SQLite (`edge.outbox.sqlite`, the default) and PostgreSQL (`edge.outbox.postgres`), chosen by `[storage]
backend` (`edge.outbox.backends`).

Public types: `StoredEvent` (a committed row), `DeadLetter` (a row a consumer refused, with the reason),
`ConsumerStatus` (a consumer's durable progress), `RetentionPolicy` (per-tenant limits of the outbox),
`Dropped` (what a retention step removed or refused) and `OutboxFull` (raised by `append_durable` when a
tenant's quota refuses new events).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from edge.sdk.errors import EdgeError, OutboxFull
from edge.sdk.events import Event, StoredEvent

if TYPE_CHECKING:
    from edge.outbox.inspect import OutboxInspector

__all__ = [
    "CommitListener",
    "ConsumerStatus",
    "DeadLetter",
    "DeviceHistory",
    "Dropped",
    "OutboxFull",
    "OutboxStore",
    "RetentionPolicy",
    "StorageUnavailable",
    "StoredEvent",
    "WakeListener",
]


class StorageUnavailable(EdgeError):
    """The outbox's database cannot be reached when the gateway starts (`edge run` exits 7). Defined here, not in
    postgres.py, so `edge run` catches it without loading psycopg."""


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
WakeListener = Callable[[Iterable[str]], None]  # the tenants another process committed rows of


class DeviceHistory(Protocol):
    """A device's stored events (tenant-scoped): the API's history and what modules read back."""

    async def read_device(
        self,
        device: str,
        types: Sequence[str],
        *,
        after: int = 0,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[StoredEvent]: ...


class OutboxStore(DeviceHistory, Protocol):
    """The persistence registry's outbox: what the gateway, consumers and modules may use, whichever backend
    (`edge.outbox.sqlite`, `edge.outbox.postgres`) or tier router (`edge.outbox.router`) is behind it.

    A durable, append-only event log with per-consumer per-tenant cursors; members below the first group act
    for the current tenant (`edge.sdk.tenancy`) only."""

    last_position: int  # every row up to here is committed (the current tenant's store)
    committed_events: int
    commits: int
    commit_failures: int

    @property
    def location(self) -> str:
        """Where the rows live, for messages (never a password)."""

    @property
    def queued(self) -> int: ...
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def inspector(self, *, writable: bool = False) -> OutboxInspector:
        """A blocking view of the same storage for status pages (`edge sync status`, /v1/sync)."""

    def now(self) -> float: ...
    async def append(self, event: Event) -> None:
        """Queue for the next group commit; waits only when the write queue is full (back-pressure)."""

    async def append_durable(self, event: Event) -> int:
        """Append and wait until the event's transaction committed; returns its position."""

    async def append_report(self, event: Event) -> None: ...
    def add_commit_listener(self, listener: CommitListener) -> None: ...
    def add_wake_listener(self, listener: WakeListener) -> None:
        """Told the tenants of commits that other processes made to the same store (PostgreSQL shared by
        several instances), so their consumers read without waiting for their idle timeout."""

    async def last_sequences(self) -> dict[tuple[str, str], int]: ...
    async def stored_cursors(self, prefix: str) -> list[tuple[str, str]]: ...
    def hold(self, consumer: str, tenants: Iterable[str]) -> None:
        """Rows of these tenants stay until `consumer` passed them (or the retention policy drops them)."""

    def release(self, consumer: str, tenants: Iterable[str]) -> None: ...

    # tenant-scoped
    async def read_after(
        self, position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[StoredEvent]: ...
    async def cursor(self, consumer: str) -> int: ...
    def set_cursor(self, consumer: str, position: int) -> None: ...
    def record_success(self, consumer: str, delivered: int) -> None: ...
    def record_failure(self, consumer: str, reason: str) -> None: ...
    async def consumer_status(self, consumer: str) -> ConsumerStatus: ...
    async def backlog(self, consumer: str) -> int: ...
    async def count(self) -> int: ...
    async def dead_letter(self, consumer: str, rejected: Sequence[tuple[StoredEvent, str]]) -> None: ...
    async def dead_letters(
        self, consumer: str | None = None, limit: int = 100, replay_only: bool = False
    ) -> list[DeadLetter]: ...
    async def resolve_dead_letters(self, consumer: str, positions: Sequence[int]) -> None: ...
    async def request_replay(self, consumer: str | None = None) -> int: ...

    # retention primitives (edge.outbox.retention), tenant-scoped
    def holders(self) -> frozenset[str]: ...
    def policy(self) -> RetentionPolicy: ...
    def usage(self) -> tuple[int, int]: ...
    def take_refused(self) -> Dropped: ...
    async def delivered_floor(self) -> int: ...
    async def first_position_since(self, enqueued: float) -> int | None: ...
    async def position_freeing(self, nbytes: int) -> int | None: ...
    async def delete_through(self, position: int, delivered_through: int, reason: str | None) -> Dropped: ...
    async def record_drops(self, reason: str, dropped: Dropped) -> None: ...
    async def drop_totals(self) -> dict[str, tuple[int, int]]: ...
