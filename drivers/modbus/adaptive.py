"""The adaptive part of read planning: pure functions that adjust a compiled plan to what a device refused.

Coalescing reads registers nobody asked for (the gaps bridged by `max_gap`), and some devices answer a whole
block with exception 2 (illegal data address) because one register in it does not exist, or because the block
crosses an internal boundary. The session then splits the block in halves (`split_request`) until it knows
which addresses fail, and records them in a `Learned`: bad addresses (never read again; a point covering one
is faulted) and cuts (a read must not span both sides). `adjust_requests(plan, learned)` turns the compiled
plan into the requests that avoid both. No I/O here, so every case is testable with plain data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from drivers.modbus.config import ModbusPoint, Table
from drivers.modbus.planner import ModbusPlan, ReadRequest, Slot

Address = tuple[Table, int]


@dataclass(frozen=True, slots=True)
class Learned:
    """What a device refused. `bad`: addresses answering exception 2. `cuts`: (table, a) where no read may
    include both a-1 and a."""

    bad: frozenset[Address] = field(default_factory=frozenset)
    cuts: frozenset[Address] = field(default_factory=frozenset)

    def __bool__(self) -> bool:
        return bool(self.bad or self.cuts)

    def with_bad(self, table: Table, start: int, end: int) -> Learned:
        return Learned(self.bad | {(table, a) for a in range(start, end)}, self.cuts)

    def with_cut(self, table: Table, address: int) -> Learned:
        return Learned(self.bad, self.cuts | {(table, address)})


@dataclass(frozen=True, slots=True)
class AdjustedPlan:
    """Requests to send, and the points (indexes into plan.points) that cover a bad address."""

    requests: tuple[ReadRequest, ...]
    unreadable: tuple[int, ...]


def adjust_requests(plan: ModbusPlan, learned: Learned) -> AdjustedPlan:
    """The plan's requests, re-cut so that none reads a bad address or spans a cut. Pure.

    A request untouched by what was learned is kept as it is (same object); an affected one is re-grouped
    from its own slots in address order, so no new request is larger than the one it came from.
    """
    if not learned:
        return AdjustedPlan(plan.requests, ())
    requests: list[ReadRequest] = []
    unreadable: list[int] = []
    for request in plan.requests:
        if _allowed(learned, request.table, request.start, request.end):
            requests.append(request)
            continue
        groups: list[list[tuple[int, int, Slot]]] = []
        start = end = 0
        for address, width, slot in _members(request, plan.points):
            if _has_bad(learned, request.table, address, address + width):
                unreadable.append(slot.point_index)
                continue
            new_end = max(end, address + width)
            if groups and _allowed(learned, request.table, start, new_end):
                groups[-1].append((address, width, slot))
                end = new_end
            else:
                groups.append([(address, width, slot)])
                start, end = address, address + width
        requests.extend(_request(request.table, group) for group in groups)
    return AdjustedPlan(tuple(requests), tuple(sorted(unreadable)))


def split_request(
    request: ReadRequest, points: Sequence[ModbusPoint]
) -> tuple[ReadRequest, ReadRequest] | None:
    """The request's slots in two halves (address order), each read as tightly as it can; None for one slot."""
    members = _members(request, points)
    if len(members) < 2:
        return None
    middle = len(members) // 2
    return _request(request.table, members[:middle]), _request(request.table, members[middle:])


def _members(request: ReadRequest, points: Sequence[ModbusPoint]) -> list[tuple[int, int, Slot]]:
    """(address, width, slot) of each slot, sorted by address."""
    return sorted(
        ((request.start + s.offset, points[s.point_index].width, s) for s in request.slots),
        key=lambda m: (m[0], m[1]),
    )


def _request(table: Table, members: Sequence[tuple[int, int, Slot]]) -> ReadRequest:
    start = min(address for address, _, _ in members)
    end = max(address + width for address, width, _ in members)
    slots = tuple(Slot(slot.point_index, address - start, slot.decode) for address, _, slot in members)
    return ReadRequest(table, start, end - start, slots)


def _has_bad(learned: Learned, table: Table, start: int, end: int) -> bool:
    bad = learned.bad
    if end - start <= len(bad):
        return any((table, a) in bad for a in range(start, end))
    return any(t == table and start <= a < end for t, a in bad)


def _allowed(learned: Learned, table: Table, start: int, end: int) -> bool:
    """True if [start, end) holds no bad address and no cut strictly inside."""
    bad, cuts = learned.bad, learned.cuts
    if end - start <= len(bad) + len(cuts):
        return not any((table, a) in bad for a in range(start, end)) and not any(
            (table, a) in cuts for a in range(start + 1, end)
        )
    return not any(t == table and start <= a < end for t, a in bad) and not any(
        t == table and start < a < end for t, a in cuts
    )
