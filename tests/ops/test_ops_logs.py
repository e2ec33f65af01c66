"""Structured log lines (tenant and device bound, secrets redacted everywhere, level switched by signals), and
the event-loop lag behind the liveness check."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator

import orjson
import pytest

from edge.config.secrets import register_secret
from edge.ops.health import LoopLag
from edge.ops.logs import configure, device_scope, install_level_signals
from edge.sdk.tenancy import TenantContext, tenant_scope
from tests.helpers import until

CANARY = "canary-7f3a9c2e-never-log-me"


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_key_value_lines_bind_tenant_and_device_and_hide_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    register_secret(CANARY)
    configure("INFO", "kv")
    log = logging.getLogger("edge.test")
    with tenant_scope(TenantContext("acme")), device_scope("inv-01"):
        log.warning("connecting with password=%s to %s", CANARY, "plc 1")
    log.info("outside any scope")
    try:
        raise ValueError(f"bad credentials {CANARY}")
    except ValueError:
        log.exception("login failed")
    lines = capsys.readouterr().err.splitlines()
    assert " level=warning tenant=acme device=inv-01 logger=edge.test " in lines[0]
    assert 'msg="connecting with password=*** to plc 1"' in lines[0]
    assert "tenant=- device=-" in lines[1]
    assert CANARY not in "\n".join(lines) and "bad credentials ***" in "\n".join(lines)


def test_json_lines_are_one_object_each_with_the_bound_fields(capsys: pytest.CaptureFixture[str]) -> None:
    register_secret(CANARY)
    configure("DEBUG", "json")
    with tenant_scope(TenantContext("globex")), device_scope("ahu-2"):
        logging.getLogger("edge.test").debug("token %s", CANARY)
    (line,) = capsys.readouterr().err.splitlines()
    record = orjson.loads(line)
    assert record["tenant"] == "globex" and record["device"] == "ahu-2" and record["level"] == "debug"
    assert record["msg"] == "token ***"


async def test_sigusr1_switches_to_debug_and_sigusr2_back(capsys: pytest.CaptureFixture[str]) -> None:
    configure("WARNING", "text")
    loop = asyncio.get_running_loop()
    install_level_signals(loop)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        await until(lambda: logging.getLogger().level == logging.DEBUG, 1.0, "DEBUG after SIGUSR1", step=0.01)
        assert logging.getLogger().level == logging.DEBUG
        os.kill(os.getpid(), signal.SIGUSR2)
        await until(
            lambda: logging.getLogger().level == logging.WARNING, 1.0, "WARNING after SIGUSR2", step=0.01
        )
        assert logging.getLogger().level == logging.WARNING
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        loop.remove_signal_handler(signal.SIGUSR2)
    assert "log level is now DEBUG" in capsys.readouterr().err


async def test_loop_lag_sees_a_blocked_event_loop() -> None:
    lag = LoopLag(interval=0.02)
    task = asyncio.create_task(lag.run())
    try:
        await asyncio.sleep(0.1)
        assert lag.take_worst() < 0.3
        time.sleep(0.6)  # noqa: ASYNC251 (on purpose: a stuck driver library blocks the loop like this)
        assert lag.current() >= 0.5  # seen even before the monitor gets to run again
        await asyncio.sleep(0.1)
        assert lag.take_worst() >= 0.5 and lag.take_worst() < 0.3  # reported once, then reset
    finally:
        task.cancel()
