"""A TCP proxy a test can freeze, between one instance and the session's PostgreSQL (tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator

import pytest

from bench.postgres import PostgresServer
from tests.helpers import free_port, wait_port


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

    def dsn(self, server: PostgresServer) -> str:
        return server.dsn().replace(f":{server.port}/", f":{self.port}/")

    def freeze(self) -> None:
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        self.thaw()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


@pytest.fixture
def proxy(postgres: PostgresServer) -> Iterator[FreezableProxy]:
    tcp = FreezableProxy(postgres.port)
    yield tcp
    tcp.close()
