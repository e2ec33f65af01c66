"""The adaptive planner: pure re-cutting of a plan around refused addresses (the session learning them is
tested against a server with holes in test_modbus_driver.py)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from drivers.modbus import ModbusPoint, plan_reads
from drivers.modbus.adaptive import Learned, adjust_requests, split_request
from edge.sdk.points import PointFault
from tests.drivers.modbus.test_modbus_driver import p

EXC2 = PointFault("modbus exception 2 (illegal data address)")


def spans(requests: Any) -> list[tuple[str, int, int]]:
    return [(r.table, r.start, r.count) for r in requests]


POINTS = [p("a", 0), p("b", 2, "uint32"), p("c", 10), p("d", 12), p("e", 20, "float32")]


def test_nothing_learned_keeps_the_plan_as_is() -> None:
    plan = plan_reads(POINTS, max_gap=10)
    adjusted = adjust_requests(plan, Learned())
    assert adjusted.requests is plan.requests and adjusted.unreadable == ()


def test_a_bad_gap_splits_the_block_and_faults_nobody() -> None:
    plan = plan_reads(POINTS, max_gap=10)
    assert spans(plan.requests) == [("holding", 0, 22)]
    adjusted = adjust_requests(plan, Learned().with_bad("holding", 5, 8))
    assert spans(adjusted.requests) == [("holding", 0, 4), ("holding", 10, 12)]
    assert adjusted.unreadable == ()


def test_a_bad_point_is_unreadable_and_its_neighbours_still_merge_around_it() -> None:
    plan = plan_reads(POINTS, max_gap=10)
    adjusted = adjust_requests(plan, Learned().with_bad("holding", 3, 4))  # inside b's uint32
    assert adjusted.unreadable == (1,)
    assert spans(adjusted.requests) == [("holding", 0, 1), ("holding", 10, 12)]
    # slots are rebased to their new request and keep their decoders
    out: list[Any] = [None] * 5
    for request in adjusted.requests:
        request.decode_into(list(range(request.start, request.end)), out)
    assert out == [0, None, 10, 12, out[4]]


def test_a_cut_stops_a_request_spanning_it() -> None:
    plan = plan_reads(POINTS, max_gap=10)
    adjusted = adjust_requests(plan, Learned().with_cut("holding", 12))
    assert spans(adjusted.requests) == [("holding", 0, 11), ("holding", 12, 10)]
    assert adjusted.unreadable == ()
    # a cut at a request's own start changes nothing
    assert adjust_requests(plan, Learned().with_cut("holding", 0)).requests == plan.requests


def test_learned_addresses_of_another_table_do_not_matter() -> None:
    plan = plan_reads(POINTS, max_gap=10)
    assert adjust_requests(plan, Learned().with_bad("input", 0, 30)).requests == plan.requests


def test_split_request_halves_by_address_and_reads_tightly() -> None:
    plan = plan_reads(POINTS, max_gap=10)
    halves = split_request(plan.requests[0], plan.points)
    assert halves is not None
    assert spans(halves) == [("holding", 0, 4), ("holding", 10, 12)]
    single = plan_reads([p("x", 7)])
    assert split_request(single.requests[0], single.points) is None


@pytest.mark.parametrize("seed", range(30))
def test_random_adjustments_cover_every_readable_point_once(seed: int) -> None:
    rng = random.Random(seed)
    points = [
        ModbusPoint(
            name=f"p{i}", address=rng.randrange(0, 300), type=rng.choice(["uint16", "uint32", "float64"])
        )
        for i in range(rng.randrange(1, 60))
    ]
    plan = plan_reads(points, max_registers=rng.choice([10, 50, 125]), max_gap=rng.randrange(0, 20))
    learned = Learned()
    for _ in range(rng.randrange(0, 8)):
        start = rng.randrange(0, 300)
        learned = learned.with_bad("holding", start, start + rng.randrange(1, 6))
    for _ in range(rng.randrange(0, 4)):
        learned = learned.with_cut("holding", rng.randrange(0, 300))
    adjusted = adjust_requests(plan, learned)
    seen = sorted(s.point_index for r in adjusted.requests for s in r.slots)
    assert sorted(seen + list(adjusted.unreadable)) == list(range(len(points)))
    for request in adjusted.requests:
        assert request.count <= 125
        assert not any(("holding", a) in learned.bad for a in range(request.start, request.end))
        for cut in range(request.start + 1, request.end):
            if ("holding", cut) in learned.cuts:  # only allowed inside one point: a point is never split
                assert len(request.slots) == 1 or any(
                    request.start + s.offset < cut < request.start + s.offset + points[s.point_index].width
                    for s in request.slots
                )
        for slot in request.slots:
            assert slot.offset >= 0 and slot.offset + points[slot.point_index].width <= request.count
    for index in adjusted.unreadable:
        point = points[index]
        assert any(("holding", a) in learned.bad for a in range(point.address, point.address + point.width))
