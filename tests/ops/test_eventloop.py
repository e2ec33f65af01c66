"""Which event loop the gateway runs on: uvloop by default, asyncio's own when asked or when uvloop is missing."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from edge.ops.eventloop import loop_factory, loop_name


async def _name() -> str:
    return loop_name(asyncio.get_running_loop())


def test_the_default_runs_on_uvloop_and_asyncio_on_request() -> None:
    with asyncio.Runner(loop_factory=loop_factory("uvloop")) as runner:
        assert runner.run(_name()) == "uvloop"
    with asyncio.Runner(loop_factory=loop_factory("asyncio")) as runner:
        assert runner.run(_name()) == "asyncio"


def test_without_uvloop_the_gateway_says_so_and_runs_on_asyncio(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what an import finds where no uvloop build exists
    with caplog.at_level(logging.WARNING, logger="edge.ops.eventloop"):
        factory = loop_factory("uvloop")
    assert factory is None
    assert "uvloop is not installed" in caplog.text
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(_name()) == "asyncio"
