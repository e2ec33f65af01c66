"""The data directory's databases are 0600, with their -wal and -shm, whatever the umask of the program the
kernel runs in (`edge` itself sets 077: tests/ops/test_cli.py checks a whole `edge run`)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.module_host.state import ModuleStateStore
from edge.webhooks import DestinationPolicy, WebhookStore


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_databases_and_their_wal_are_private_under_a_permissive_umask(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = WebhookStore(data / "outbox.db", DestinationPolicy())  # the outbox's file: webhook secrets
    try:
        assert _mode(data) == 0o700
        for name in ("outbox.db", "outbox.db-wal", "outbox.db-shm"):
            assert _mode(data / name) == 0o600, name
    finally:
        store.close()
    ModuleStateStore(data).set_desired("alarms", True)
    module_state = sorted(data.glob("modules.db*"))
    assert module_state and all(_mode(p) == 0o600 for p in module_state), module_state
