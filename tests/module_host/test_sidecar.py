"""Isolated modules and sidecars: real processes on the kernel's gRPC socket, killed under load."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest

from edge.module_host.host import HostedModule
from edge.module_host.sidecar_server import HEALTH_INTERVAL, RemoteModule
from edge.module_host.supervisor import Limits, RunState
from edge.outbox.sqlite import SqliteOutbox
from edge.plugins import LoadedPlugin, Manifest, parse_manifest
from edge.sdk.events import TELEMETRY, make_event
from edge.sdk.proto import TOKEN_HEADER
from edge.sdk.proto import module_pb2 as pb
from edge.sdk.proto import module_pb2_grpc as pb_grpc
from edge.sdk.tenancy import TenantContext, tenant_scope
from tests.helpers import until
from tests.module_host.conftest import ACME, GLOBEX, Kernel
from tests.module_host.test_modules import PeakPower, _plugin

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "tests" / "sidecar_modules"
ENV = {"PYTHONPATH": str(ROOT), "EDGE_LOG_LEVEL": "WARNING"}
FAST = Limits(backoff_initial=0.1, backoff_cap=0.5, health_timeout=10.0, start_timeout=20.0)


def _echo_command(factory: str = "Echo") -> list[str]:
    return [
        sys.executable,
        "-m",
        "edge.sdk.runner",
        "echo",
        "--factory",
        f"tests.sidecar_modules.echo:{factory}",
        "--manifest",
        str(MODULES / "echo.manifest.toml"),
    ]


RAW_COMMAND = [sys.executable, str(ROOT / "examples" / "sidecar" / "raw_sidecar.py")]
NODE_SIDECAR = ROOT / "examples" / "sidecar-node"
NODE_COMMAND = [shutil.which("node") or "node", str(NODE_SIDECAR / "sidecar.js")]
NEEDS_NODE = pytest.mark.skipif(
    shutil.which("node") is None, reason="Node.js is not installed (scripts/setup.sh installs its packages)"
)
ECHO_MANIFEST = parse_manifest(tomllib.loads((MODULES / "echo.manifest.toml").read_text()), "echo")


async def _telemetry(outbox: SqliteOutbox, tenant: TenantContext, sequence: int) -> None:
    event = make_event(
        type=TELEMETRY,
        source="/gw/modbus/inv",
        subject="roof/inv",
        tenant=tenant.tenant_id,
        time=time.time(),
        data={
            "device": "inv",
            "site": "roof",
            "points": {"ac_power": {"value": float(sequence), "unit": "W", "quality": "good"}},
        },
        device="inv",
        sequence=sequence,
    )
    with tenant_scope(tenant):
        await outbox.append(event)


async def _echoed(
    outbox: SqliteOutbox, event_type: str, tenant: TenantContext = ACME
) -> list[dict[str, Any]]:
    with tenant_scope(tenant):
        rows = await outbox.read_after(0, 1_000_000, [event_type])
    return [orjson.loads(r.body)["data"] for r in rows]


@pytest.mark.parametrize(
    ("command", "manifest", "echo_type"),
    [
        (_echo_command(), ECHO_MANIFEST, "org.example.echo"),  # a Python module, SDK runner
        pytest.param(  # a sidecar on the generated stubs only (end to end in test_module_gateway.py too)
            RAW_COMMAND, None, "org.example.raw.seen", marks=pytest.mark.slow
        ),
        pytest.param(NODE_COMMAND, None, "org.example.node.seen", marks=NEEDS_NODE),  # Node, @grpc/grpc-js
    ],
    ids=["sdk-runner", "raw-grpc-sidecar", "node-sidecar"],
)
async def test_killing_an_isolated_module_under_load_loses_nothing_and_leaves_the_kernel_running(
    kernel: Kernel, command: list[str], manifest: Manifest | None, echo_type: str
) -> None:
    total = 400
    neighbour = PeakPower()  # an in-process module beside it must not notice
    await kernel.host.start("peak", _plugin("peak", lambda: neighbour), {})
    name = manifest.name if manifest else echo_type.split(".")[2]  # a sidecar's comes when it registers
    await kernel.isolation.start(name, {}, command, manifest=manifest, env=ENV, limits=FAST)
    supervisor = kernel.isolation.supervisors[name]

    async def produce() -> None:  # ~1000 events/s of each tenant, interleaved, until `total`
        for sequence in range(1, total + 1):
            await _telemetry(kernel.outbox, ACME, sequence)
            await _telemetry(kernel.outbox, GLOBEX, sequence)
            if sequence % 20 == 0:
                await asyncio.sleep(0.02)

    producer = asyncio.create_task(produce())

    async def some_echoed() -> bool:
        return len(await _echoed(kernel.outbox, echo_type)) >= 100

    await until(some_echoed, within=20.0)
    victim = supervisor.pid
    assert victim is not None
    registered = supervisor.remote.registered
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()

    async def back() -> bool:
        return supervisor.remote.registered > registered

    await until(back, step=0.01, within=20.0)
    restart = time.monotonic() - killed
    await producer

    async def all_echoed() -> bool:
        return {d["sequence"] for d in await _echoed(kernel.outbox, echo_type)} >= set(range(1, total + 1))

    await until(all_echoed, within=30.0)
    echoed = await _echoed(kernel.outbox, echo_type)
    sequences = [d["sequence"] for d in echoed]
    assert set(sequences) == set(range(1, total + 1))  # none missed, nothing of globex's
    duplicates = len(sequences) - total  # the batch in flight at the kill comes again (at least once)
    assert duplicates <= 200
    assert supervisor.launches == 2 and supervisor.state is RunState.RUNNING
    assert "SIGKILL" in (supervisor.last_exit or "")
    assert (
        len(neighbour.seen) == 2 * total
    )  # the in-process module went on: every event of both tenants, once
    health = await kernel.host.health()
    assert health[name].ok and health["peak"].ok
    print(f"\n{name}: restart after SIGKILL {restart * 1000:.0f} ms, {duplicates} redelivered")


async def test_a_module_that_keeps_crashing_opens_the_circuit_instead_of_a_restart_loop(
    kernel: Kernel,
) -> None:
    limits = Limits(backoff_initial=0.05, backoff_cap=0.1, max_crashes=3)
    command = [sys.executable, "-c", "import sys; sys.exit(3)"]
    manifest = Manifest("crashy", "module", "1.0.0", ">=1,<2")
    with tenant_scope(ACME):  # it ran before: a cursor of acme's events is stored
        kernel.outbox.set_cursor("module:crashy:0", 1)
    await _telemetry(kernel.outbox, ACME, 1)  # the cursor is stored with the next commit

    async def cursor_stored() -> bool:
        return await kernel.outbox.stored_cursors("module:crashy:") == [("module:crashy:0", "acme")]

    await until(cursor_stored, within=5.0)
    await kernel.isolation.start("crashy", {}, command, manifest=manifest, limits=limits)
    supervisor = kernel.isolation.supervisors["crashy"]

    async def open_circuit() -> bool:
        return supervisor.state is RunState.CIRCUIT_OPEN

    await until(open_circuit, within=10.0)
    await asyncio.sleep(0.5)
    assert supervisor.launches == 3  # and no more
    with tenant_scope(ACME):  # down for good, yet retention keeps what it has not passed
        assert "module:crashy:0" in kernel.outbox.holders()
    health = (await kernel.host.health())["crashy"]
    assert not health.ok and "circuit open after 3 crashes (last: exit code 3)" in health.detail
    supervisor.start()  # an operator enabling it again re-arms it

    async def relaunched() -> bool:
        return supervisor.launches > 3

    await until(relaunched, within=5.0)


async def test_a_module_above_its_memory_limit_is_ended_and_restarted(kernel: Kernel) -> None:
    limits = Limits(memory_bytes=160 << 20, backoff_initial=0.1, backoff_cap=0.2, max_crashes=2)
    await kernel.isolation.start(
        "echo", {}, _echo_command("Hog"), manifest=ECHO_MANIFEST, env=ENV, limits=limits
    )
    supervisor = kernel.isolation.supervisors["echo"]

    async def circuit_open() -> bool:
        return supervisor.state is RunState.CIRCUIT_OPEN

    await until(circuit_open, within=30.0)
    assert (supervisor.last_exit or "").startswith("memory limit: RSS")
    assert supervisor.launches == 2
    await _telemetry(kernel.outbox, ACME, 1)  # the kernel is unaffected

    async def stored() -> bool:
        with tenant_scope(ACME):
            return len(await kernel.outbox.read_after(0, 10, [TELEMETRY])) == 1

    await until(stored, within=2.0)


async def test_a_module_above_its_cpu_limit_is_ended(kernel: Kernel) -> None:
    limits = Limits(cpu_percent=25.0, cpu_window=1.0, max_crashes=1, start_timeout=20.0)
    await kernel.isolation.start(
        "echo", {}, _echo_command("Spin"), manifest=ECHO_MANIFEST, env=ENV, limits=limits
    )
    supervisor = kernel.isolation.supervisors["echo"]

    async def circuit_open() -> bool:
        return supervisor.state is RunState.CIRCUIT_OPEN

    await until(circuit_open, within=20.0)
    assert (supervisor.last_exit or "").startswith("cpu limit:"), supervisor.last_exit
    assert supervisor.remote.registered == 1  # ended for burning CPU once running, not for starting up


@pytest.mark.slow
async def test_a_quiet_module_is_not_held_to_its_start_up_cpu(kernel: Kernel) -> None:
    limits = Limits(cpu_percent=25.0, cpu_window=1.0, max_crashes=1)
    await kernel.isolation.start("echo", {}, _echo_command(), manifest=ECHO_MANIFEST, env=ENV, limits=limits)
    supervisor = kernel.isolation.supervisors["echo"]

    async def running() -> bool:
        return supervisor.state is RunState.RUNNING

    await until(running, within=20.0)
    await asyncio.sleep(2.0)
    assert supervisor.state is RunState.RUNNING and supervisor.launches == 1


async def test_point_writes_are_refused_for_tenants_the_module_is_not_entitled_to(
    kernel: Kernel, tmp_path: Path
) -> None:
    """WritePoint over the real socket, as a module process calls it (the writes that reach devices are in
    test_domain_end_to_end.py, isolated): a tenant the module is not entitled to is refused before any
    device is touched, a malformed value is refused, and a kernel without devices says so."""
    server = kernel.isolation.server
    await server.start()
    try:
        remote = RemoteModule(
            HostedModule("echo", LoadedPlugin(ECHO_MANIFEST, None)), {}, ECHO_MANIFEST, ROOT
        )
        kernel.host.modules["echo"] = remote.hosted  # as Isolation.start attaches it
        server.expect("launch-1", remote)
        metadata = ((TOKEN_HEADER, "launch-1"),)
        async with grpc.aio.insecure_channel(f"unix:{server.socket}") as channel:
            stub = pb_grpc.ModuleHostStub(channel)  # type: ignore[no-untyped-call]
            text = (MODULES / "echo.manifest.toml").read_text()
            reply = await stub.Register(pb.RegisterRequest(manifest_toml=text), metadata=metadata)
            assert [t.id for t in reply.tenants] == ["acme"]
            assert reply.store_path == str(tmp_path / "modules" / "echo.sqlite")  # the in-process file

            async def write(tenant: str, value_json: str = "21.5") -> pb.WritePointReply:
                request = pb.WritePointRequest(
                    tenant=tenant,
                    site="roof",
                    device="vav-1",
                    point="zone-temp-setpoint",
                    value_json=value_json,
                )
                return await stub.WritePoint(request, metadata=metadata)

            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await write("globex")
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "not entitled to 'globex'" in str(refused.value.details())
            with pytest.raises(grpc.aio.AioRpcError) as malformed:
                await write("acme", '{"a": 1}')
            assert malformed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as no_devices:
                await write("acme")
            assert no_devices.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "no write path to devices" in str(no_devices.value.details())
            # entitled live: module commands for globex are admitted from now on, as for in-process modules
            assert kernel.host.serves("globex", "echo") == "tenant is not entitled to module 'echo'"
            await kernel.host.tenants.set_entitlements("globex", {"solar", "echo"})
            assert kernel.host.serves("globex", "echo") is None
    finally:
        await server.stop()


async def test_an_isolated_modules_ticks_run_in_its_process_per_entitled_tenant(kernel: Kernel) -> None:
    """`context.every` in an isolated module: the runner ticks per entitled tenant (publishing in its name),
    counts a tick that raises (reported with its health) and goes on, and follows entitlement changes at its
    next health report (every HEALTH_INTERVAL seconds)."""
    await kernel.isolation.start(
        "echo", {}, _echo_command("Ticks"), manifest=ECHO_MANIFEST, env=ENV, limits=FAST
    )
    hosted = kernel.host.modules["echo"]

    async def ticks(tenant: TenantContext) -> list[int]:
        return [d["n"] for d in await _echoed(kernel.outbox, "org.example.tick", tenant)]

    async def acme_ticked_and_errors_reported() -> bool:
        return len(await ticks(ACME)) >= 4 and hosted.handler_errors >= 2

    await until(acme_ticked_and_errors_reported)
    assert (await ticks(ACME))[:4] == [1, 2, 3, 4]  # every second one raised: the ticks went on
    assert await ticks(GLOBEX) == []  # not entitled to echo

    await kernel.host.tenants.set_entitlements("globex", {"solar", "echo"})

    async def globex_ticks() -> bool:
        return len(await ticks(GLOBEX)) >= 2

    await until(globex_ticks, within=10.0)
    await kernel.host.tenants.set_entitlements("acme", {"raw", "node", "solar"})  # echo revoked
    await asyncio.sleep(2 * HEALTH_INTERVAL)  # the runner hears of it at its next health report
    settled = len(await ticks(ACME))
    await asyncio.sleep(1.0)
    assert len(await ticks(ACME)) == settled  # acme's ticks stopped
    assert len(await ticks(GLOBEX)) >= 10  # while globex's went on
    await kernel.host.stop_module("echo")  # disabled: the process ends its ticks, then itself
    stopped = len(await ticks(GLOBEX))
    await asyncio.sleep(0.5)
    assert len(await ticks(GLOBEX)) == stopped
