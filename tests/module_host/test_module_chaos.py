"""Module chaos: real isolated modules (SDK runner) that get killed again and again under load, leak memory,
deadlock a handler, freeze their process, or crash at every start, beside a module that behaves.

What must hold each time: the kernel goes on (an in-process neighbour gets every event of both tenants,
once), the bad module is ended for the stated reason and restarted with backoff (or its circuit opens), and
every event still reaches a restarted module (by sequence: at least once, nothing missed). Single kills, the
fast memory bomb and the CPU spinner are in test_sidecar.py. The longer runs (repeated kills, the leak, the
frozen process) are marked slow.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from edge.module_host.supervisor import Limits, RunState, Supervisor
from tests.helpers import until
from tests.module_host.conftest import ACME, GLOBEX, Kernel
from tests.module_host.test_modules import PeakPower, _plugin
from tests.module_host.test_sidecar import ECHO_MANIFEST, ENV, MODULES, _echo_command, _echoed, _telemetry

ECHO = "org.example.echo"


async def _neighbour(k: Kernel) -> PeakPower:
    neighbour = PeakPower()
    await k.host.start("peak", _plugin("peak", lambda: neighbour), {})
    return neighbour


async def _produce(k: Kernel, total: int, per_burst: int = 20, pause: float = 0.02) -> None:
    """`total` telemetry events of each tenant, interleaved, ~1000/s of each."""
    for sequence in range(1, total + 1):
        await _telemetry(k.outbox, ACME, sequence)
        await _telemetry(k.outbox, GLOBEX, sequence)
        if sequence % per_burst == 0:
            await asyncio.sleep(pause)


async def _all_echoed(k: Kernel, total: int, within: float) -> list[int]:
    async def complete() -> bool:
        return {d["sequence"] for d in await _echoed(k.outbox, ECHO)} >= set(range(1, total + 1))

    await until(complete, within=within, what=f"all {total} events echoed")
    return [d["sequence"] for d in await _echoed(k.outbox, ECHO)]


async def _isolated(
    k: Kernel, factory: str, limits: Limits, config: dict[str, object] | None = None
) -> Supervisor:
    await k.isolation.start(
        "echo", config or {}, _echo_command(factory), manifest=ECHO_MANIFEST, env=ENV, limits=limits
    )
    return k.isolation.supervisors["echo"]


def _progress(k: Kernel, minimum: int) -> Callable[[], Awaitable[bool]]:
    async def echoed() -> bool:
        return len(await _echoed(k.outbox, ECHO)) >= minimum

    return echoed


@pytest.mark.slow
async def test_a_module_killed_again_and_again_under_load_misses_nothing(kernel: Kernel) -> None:
    total, kills = 1500, 4
    neighbour = await _neighbour(kernel)
    limits = Limits(backoff_initial=0.1, backoff_cap=0.5, max_crashes=kills + 2, start_timeout=20.0)
    supervisor = await _isolated(kernel, "Echo", limits)
    producer = asyncio.create_task(_produce(kernel, total, per_burst=10, pause=0.02))
    restarts = []
    for n in range(kills):
        await until(_progress(kernel, 50 * (n + 1)), within=30.0)
        pid, registered = supervisor.pid, supervisor.remote.registered
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        await until(lambda r=registered: supervisor.remote.registered > r, within=20.0, step=0.01)
        restarts.append(time.monotonic() - killed)
    await producer
    sequences = await _all_echoed(kernel, total, within=60.0)
    assert set(sequences) == set(range(1, total + 1))  # acme's only, none missed
    assert supervisor.launches == kills + 1 and supervisor.state is RunState.RUNNING
    assert len(neighbour.seen) == 2 * total  # the in-process module went on, every event once
    print(
        f"\n{kills} kills: restart {', '.join(f'{r * 1000:.0f}' for r in restarts)} ms;"
        f" {len(sequences) - total} redelivered"
    )


@pytest.mark.slow
async def test_a_module_that_leaks_is_ended_at_its_memory_limit_and_restarted_and_misses_nothing(
    kernel: Kernel,
) -> None:
    total = 600
    neighbour = await _neighbour(kernel)
    # a fresh runner is ~60-80 MiB; it keeps 1 MiB per event: ended every ~100 events, a batch (<= 200
    # events, acked whole) still fits, so each life moves the cursor on
    limits = Limits(memory_bytes=200 << 20, backoff_initial=0.1, backoff_cap=0.3, max_crashes=50)
    supervisor = await _isolated(kernel, "Leak", limits)
    await _produce(kernel, total, per_burst=5, pause=0.05)
    sequences = await _all_echoed(kernel, total, within=120.0)
    assert set(sequences) == set(range(1, total + 1))
    assert supervisor.launches >= 2, "never reached its memory limit"
    assert (supervisor.last_exit or "").startswith("memory limit: RSS")
    assert len(neighbour.seen) == 2 * total
    print(
        f"\nleaking module: {supervisor.launches} launches for {total} events, last end: {supervisor.last_exit}"
    )


@pytest.mark.parametrize(
    ("factory", "reason"),
    [
        ("Deadlock", "no health report"),  # the runner's handler watchdog falls silent (handler_timeout)
        pytest.param(  # the whole process hangs: no report at all
            "Freeze", "no health report", marks=pytest.mark.slow
        ),
    ],
)
async def test_a_module_whose_handler_hangs_is_ended_by_its_health_timeout_and_misses_nothing(
    kernel: Kernel, factory: str, reason: str, tmp_path: Path
) -> None:
    total = 150
    neighbour = await _neighbour(kernel)
    limits = Limits(
        health_timeout=2.0, handler_timeout=1.0, backoff_initial=0.1, backoff_cap=0.3, max_crashes=20
    )
    # the first life handles 60 events, then hangs; the next one finds the marker and does not
    supervisor = await _isolated(
        kernel, factory, limits, {"hang_after": 60, "marker": str(tmp_path / "hung")}
    )
    await _produce(kernel, total)
    sequences = await _all_echoed(kernel, total, within=90.0)
    assert set(sequences) == set(range(1, total + 1))
    assert supervisor.launches == 2 and supervisor.state is RunState.RUNNING
    assert reason in (supervisor.last_exit or ""), supervisor.last_exit
    assert len(neighbour.seen) == 2 * total
    health = await kernel.host.health()
    assert health["peak"].ok


async def test_a_module_that_crashes_at_every_start_opens_its_circuit_and_its_neighbours_go_on(
    kernel: Kernel,
) -> None:
    total = 300
    neighbour = await _neighbour(kernel)
    await _isolated(kernel, "Echo", Limits(start_timeout=20.0))  # an isolated neighbour that behaves
    crashy = [
        sys.executable,
        "-m",
        "edge.sdk.runner",
        "crashy",
        "--factory",
        "tests.sidecar_modules.echo:CrashAtStart",
        "--manifest",
        str(MODULES / "crashy.manifest.toml"),
    ]
    limits = Limits(backoff_initial=0.05, backoff_cap=0.2, max_crashes=3, start_timeout=20.0)
    await kernel.isolation.start("crashy", {}, crashy, env=ENV, limits=limits)
    supervisor = kernel.isolation.supervisors["crashy"]
    producer = asyncio.create_task(_produce(kernel, total))
    # each crash ends its process at once: three launches, not three 15 s health timeouts (~47 s before)
    await until(lambda: supervisor.state is RunState.CIRCUIT_OPEN, within=25.0, what="circuit open")
    await producer
    assert supervisor.launches == 3  # and no more
    await asyncio.sleep(0.5)
    assert supervisor.launches == 3
    health = await kernel.host.health()
    assert not health["crashy"].ok and "circuit open after 3 crashes" in health["crashy"].detail
    assert health["echo"].ok and health["peak"].ok
    assert set(await _all_echoed(kernel, total, within=30.0)) == set(range(1, total + 1))
    assert len(neighbour.seen) == 2 * total
