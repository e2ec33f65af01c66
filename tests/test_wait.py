"""The shared bounded waits (tests/helpers.py): they return what the condition found, and a timeout names
what was awaited, so a failing test says what never happened."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.helpers import WaitTimedOut, free_port, until, wait_port, wait_until


def test_wait_until_returns_the_first_truthy_result() -> None:
    polls = iter([None, 0, [], "ready"])
    assert wait_until(lambda: next(polls), 1.0, step=0.001) == "ready"


def test_wait_until_fails_after_its_bound_naming_what_it_awaited() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"^timed out after 0\.2 s waiting for the valve; open=False$"):
        wait_until(lambda: False, 0.2, "the valve", detail=lambda: "open=False")
    assert 0.2 <= time.monotonic() - started < 1.0


def test_without_a_name_the_timeout_quotes_the_condition_from_the_test() -> None:
    doors: list[str] = []
    with pytest.raises(AssertionError, match=r"waiting for .*lambda: len\(doors\) == 2"):
        wait_until(lambda: len(doors) == 2, 0.05)

    def door_opened() -> bool:
        return False

    with pytest.raises(AssertionError, match=r"waiting for .*door_opened$"):
        wait_until(door_opened, 0.05)


async def test_until_yields_to_the_loop_and_awaits_an_async_condition() -> None:
    flag = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, flag.set)
    assert await until(flag.is_set, 2.0) is True

    async def count() -> int:
        await asyncio.sleep(0)
        return 3

    assert await until(count, 1.0) == 3


async def test_until_fails_after_its_bound_naming_what_it_awaited() -> None:
    async def never() -> bool:
        return False

    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"^timed out after 0\.2 s waiting for the uplink's cursor$"):
        await until(never, 0.2, "the uplink's cursor")
    assert 0.2 <= time.monotonic() - started < 1.0


def test_a_timeout_is_a_test_failure_and_a_timeout_error() -> None:
    with pytest.raises(WaitTimedOut) as info:
        wait_port(free_port(), 0.1)  # nothing listens there
    assert isinstance(info.value, AssertionError) and isinstance(info.value, TimeoutError)
    assert "something to listen on 127.0.0.1:" in str(info.value)
