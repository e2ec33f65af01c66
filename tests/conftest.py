from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

from bench.postgres import PostgresServer
from tests.helpers import MosquittoProcess
from tests.outbox_stores import Stores


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """A run that selects the slow tests (`scripts/test.sh -m slow`) runs them in one process, unless the command
    line asks for workers: they measure rates and timings, which workers sharing the cores would distort."""
    args = config.invocation_params.args
    asked = any(a in ("-n", "--numprocesses") or a.startswith(("-n", "--numprocesses=")) for a in args)
    if not asked and _selects_slow(config.option.markexpr):
        config.option.numprocesses = 0


def _selects_slow(markexpr: str) -> bool:
    return bool(markexpr) and Expression.compile(markexpr).evaluate(lambda name, **_: name == "slow")


# The gateway runs on uvloop (edge/ops/eventloop.py), in-process tests on asyncio's own loop. The code that
# drives sockets through the loop itself, the MQTT bus (add_reader/add_writer around paho) and the Modbus
# client (a Protocol on the loop's transports), is tested on both.
BOTH_LOOPS = ("tests.bus.test_bus_mqtt", "tests.drivers.modbus.test_modbus_mbap")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    module = getattr(item, "module", None)
    if module is None or module.__name__ not in BOTH_LOOPS:
        return {"asyncio": asyncio.new_event_loop}  # what pytest-asyncio does without this hook
    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoProcess]:
    """One real broker shared by the session; tests that kill a broker start their own."""
    broker = MosquittoProcess(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def private_mosquitto(tmp_path: Path) -> Iterator[MosquittoProcess]:
    broker = MosquittoProcess(tmp_path)
    broker.start()
    yield broker
    broker.kill()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One private PostgreSQL server (Debian's binaries, 127.0.0.1, a free port) for the session."""
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    server.stop("immediate")


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    """The outbox contract on both backends: SQLite files in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return Stores("sqlite", tmp_path)
    server: PostgresServer = request.getfixturevalue("postgres")
    return Stores("postgresql", tmp_path, server, server.create_database(f"t_{uuid.uuid4().hex[:16]}"))
