"""The isolated-module tests' kernel: a real outbox, a module host and the isolation (gRPC server, supervisors)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.module_host.host import ModuleHost
from edge.module_host.supervisor import Isolation
from edge.outbox.sqlite import SqliteOutbox
from edge.sdk.tenancy import TenantContext

ACME = TenantContext("acme", entitlements=frozenset({"echo", "raw", "node", "solar"}))
GLOBEX = TenantContext("globex", entitlements=frozenset({"solar"}))  # entitled to neither sidecar


@dataclass
class Kernel:
    outbox: SqliteOutbox
    host: ModuleHost
    isolation: Isolation


@pytest.fixture
async def kernel(tmp_path: Path) -> AsyncIterator[Kernel]:
    # echo modules publish one durable event per event, one at a time: a short group commit keeps that fast
    outbox = SqliteOutbox(tmp_path / "outbox.db", synchronous="normal", commit_interval=0.001)
    await outbox.open()
    host = ModuleHost(outbox, [ACME, GLOBEX], "gw", outbox.path.parent)
    isolation = Isolation(host, tmp_path)
    yield Kernel(outbox, host, isolation)
    await isolation.stop()
    await host.stop()
    await outbox.close()
