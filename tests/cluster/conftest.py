"""A real PostgreSQL for the cluster tests (one per session), and a TCP proxy a test can freeze."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator

import pytest

from edge.cluster.localdb import LocalPostgres
from tests.helpers import free_port, wait_port


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    server = LocalPostgres(free_port())
    server.start()
    yield server
    server.remove()


class FreezableProxy:
    """socat forwarding 127.0.0.1:<port> to PostgreSQL, in its own process group: SIGSTOP to the group freezes
    every forwarded connection at once (a partition between one instance and the database), SIGCONT heals it."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        binary = shutil.which("socat")
        assert binary is not None, "socat is installed by scripts/setup.sh"
        self.proc = subprocess.Popen(
            [binary, f"TCP-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork", f"TCP:127.0.0.1:{target_port}"],
            start_new_session=True,
        )
        wait_port(self.port)

    def dsn(self, direct: str, pg_port: int) -> str:
        return direct.replace(f":{pg_port}/", f":{self.port}/")

    def freeze(self) -> None:
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        self.thaw()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


@pytest.fixture
def proxy(postgres: LocalPostgres) -> Iterator[FreezableProxy]:
    tcp = FreezableProxy(postgres.port)
    yield tcp
    tcp.close()
