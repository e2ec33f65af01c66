"""The persistence registry: the outbox interface the kernel and plug-ins use, SQLite its default implementation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from edge.events import Event


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int  # the outbox row id: total order of commits
    id: str
    tenant: str
    type: str
    subject: str
    device: str | None
    sequence: int | None
    time: float
    body: bytes


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

    # tenant-scoped
    async def read_after(
        self, position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[StoredEvent]: ...
    async def cursor(self, consumer: str) -> int: ...
    def set_cursor(self, consumer: str, position: int) -> None: ...
    async def backlog(self, consumer: str) -> int: ...
