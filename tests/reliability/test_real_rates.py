"""The fault tests at a site's rate (reliability plan T01, T03, T06, T07, T10, T24 module kill; issue 22): six
Modbus bank simulators (their own processes) offer 6,000 events/s to the real gateway process, which stores
5,000-5,900 of them a second on a quiet 2-core box with the simulators, broker and cloud beside it. It uploads
to the cloud simulator while it is killed with SIGKILL, its isolated uplink module is killed, the broker is
killed, the cloud is unreachable, its data disk fills up and its wall clock steps. Nothing the gateway acked
may be lost; recovery times are measured and printed (docs/reliability.md, "At a site's rate").
Slow: `scripts/test.sh -m slow`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import MosquittoProcess, until
from tests.reliability.harness import LIBFAKETIME, Banks, DiskFull, Rig, integrity_ok
from tests.reliability.test_gateway_faults import assert_clean

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RATE = Banks(processes=6, devices=20, registers=10, poll_interval=0.02)  # 6,000 events/s offered
UPLINK = {"batch_size": 500, "linger": 0.05}


def _stored(rig: Rig) -> tuple[float, int]:
    """The gateway's uptime (monotonic, so a wall-clock step does not bend it) and events stored so far."""
    assert rig.gateway is not None
    status = rig.gateway.status() or {}
    return float(status.get("uptime", 0.0)), int(status.get("events_stored", 0))


async def _ingest_rate(rig: Rig, seconds: float = 4.0) -> float:
    """Events/s the gateway stored over `seconds` (from its status file, rewritten every second; 0 if the
    gateway restarted meanwhile)."""
    t0, n0 = _stored(rig)
    await asyncio.sleep(seconds)
    t1, n1 = _stored(rig)
    return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


async def _started(rig: Rig) -> float:
    rig.start_gateway()
    took = await rig.wait_running(30)
    await until(lambda: _stored(rig)[1] > 0, 30, "the first events stored")
    return took


def _published(rig: Rig) -> bool:
    """Connected again, and the MQTT publisher's backlog back under a second of ingest."""
    assert rig.gateway is not None
    status = rig.gateway.status() or {}
    return bool(status.get("bus_connected")) and int(status.get("backlog", 1 << 30)) < 5000


def _report(name: str, figures: dict[str, object]) -> None:
    print(f"\n{name}: " + "; ".join(f"{k} {v}" for k, v in figures.items()))


async def test_t01_gateway_killed_at_5000_events_per_s_loses_nothing_acked(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with Rig(tmp_path, mosquitto.port, banks=RATE, sync=UPLINK) as rig:
        assert rig.gateway is not None
        await _started(rig)
        rates, restarts = [await _ingest_rate(rig)], []
        for _ in range(3):
            await asyncio.sleep(2.0)
            rig.kill_gateway()
            assert integrity_ok(rig.gateway.data / "outbox.db") == "ok"
            restarts.append(await _started(rig))
            rates.append(await _ingest_rate(rig, 3.0))
        drain_from = time.monotonic()
        await rig.drained(240)
        _report(
            "T01 at rate",
            {
                "ingest ev/s (per phase)": [round(r) for r in rates],
                "restart->first status s": [round(r, 2) for r in restarts],
                "drained after s": round(time.monotonic() - drain_from, 1),
            },
        )
        assert max(restarts) <= 5.0
    assert_clean(rig, "T01 at rate")


async def test_t24_isolated_uplink_killed_at_5000_events_per_s_loses_nothing_acked(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with Rig(tmp_path, mosquitto.port, banks=RATE, sync=UPLINK, isolated_uplink=True) as rig:
        assert rig.gateway is not None
        await _started(rig)
        assert rig.gateway.proc is not None
        gateway = psutil.Process(rig.gateway.proc.pid)

        def uplink_pid() -> int | None:
            for child in gateway.children():
                try:
                    if child.status() != psutil.STATUS_ZOMBIE and "edge.sdk.runner" in " ".join(
                        child.cmdline()
                    ):
                        return child.pid
                except psutil.Error:  # gone or reaped meanwhile
                    continue
            return None

        await until(lambda: uplink_pid() is not None and rig.cloud.unique() > 0, 60, "the uplink uploads")
        rate, recoveries = await _ingest_rate(rig), []
        for _ in range(3):
            await asyncio.sleep(2.0)
            victim = uplink_pid()
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            killed, before = time.monotonic(), rig.cloud.unique()
            await until(lambda v=victim: uplink_pid() not in (None, v), 60, "a new uplink process")
            await until(lambda b=before: rig.cloud.unique() > b + 1000, 60, "uploads again")
            recoveries.append(time.monotonic() - killed)
        drain_from = time.monotonic()
        await rig.drained(240)
        assert rig.gateway.alive(), rig.gateway.output()
        _report(
            "T24 uplink module killed at rate",
            {
                "ingest ev/s": round(rate),
                "kill->uploading again s": [round(r, 2) for r in recoveries],
                "drained after s": round(time.monotonic() - drain_from, 1),
            },
        )
    assert_clean(rig, "T24 at rate")


async def test_t07_broker_killed_at_5000_events_per_s_loses_nothing_acked(tmp_path: Path) -> None:
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    broker = MosquittoProcess(broker_dir)
    broker.start()
    try:
        async with Rig(tmp_path, broker.port, banks=RATE, sync=UPLINK) as rig:
            assert rig.gateway is not None
            await _started(rig)
            rate, recoveries, peaks = await _ingest_rate(rig), [], []
            for _ in range(2):
                broker.kill()
                await asyncio.sleep(3.0)
                peaks.append(int((rig.gateway.status() or {}).get("backlog", 0)))
                broker.start()
                back = time.monotonic()
                # caught up: the MQTT publisher's backlog back under a second of ingest
                await until(lambda: _published(rig), 60, "the MQTT backlog published", step=0.1)
                recoveries.append(time.monotonic() - back)
                await asyncio.sleep(2.0)
            await rig.drained(240)
            _report(
                "T07 broker killed at rate",
                {
                    "ingest ev/s": round(rate),
                    "MQTT backlog after 3 s down": peaks,
                    "broker back->backlog published s": [round(r, 2) for r in recoveries],
                },
            )
        assert_clean(rig, "T07 at rate")
    finally:
        broker.kill()


async def test_t03_cloud_down_at_5000_events_per_s_then_drained_with_nothing_lost(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with Rig(tmp_path, mosquitto.port, banks=RATE, sync=UPLINK) as rig:
        assert rig.gateway is not None and rig.proxy is not None
        await _started(rig)
        await until(lambda: rig.cloud.unique() > 0, 60, "the first upload")
        rate = await _ingest_rate(rig)
        await rig.proxy.set_down(True)
        await asyncio.sleep(10.0)
        backlog = rig.cloud_backlog() or 0
        await rig.proxy.set_down(False)
        up = time.monotonic()
        await until(lambda: (rig.cloud_backlog() or 0) < 5000, 240, "the cloud backlog drained", step=0.2)
        caught_up = time.monotonic() - up
        await rig.drained(240)
        _report(
            "T03 cloud down 10 s at rate",
            {
                "ingest ev/s": round(rate),
                "backlog": backlog,
                "caught up after s": round(caught_up, 1),
                "net drain ev/s": round(backlog / caught_up) if caught_up else None,
            },
        )
        assert backlog > 10_000
    assert_clean(rig, "T03 at rate")


async def _stored_by_ledger(rig: Rig, seconds: float) -> float:
    """Events/s the outbox file gained over `seconds`, counted from the file itself (the status file lives
    on the same disk, so it goes stale while the disk is full)."""
    assert rig.ledger is not None
    before, t0 = rig.outbox_total(), time.monotonic()
    await asyncio.sleep(seconds)
    return (rig.outbox_total() - before) / (time.monotonic() - t0)


async def test_t06_data_disk_full_at_rate_slows_ingest_and_loses_nothing_acked(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    # the gateway's whole data directory
    with DiskFull.mounted(tmp_path / "data", 256 << 20) as disk:
        async with Rig(tmp_path, mosquitto.port, banks=RATE, sync=UPLINK) as rig:
            assert rig.gateway is not None
            await _started(rig)
            await until(lambda: rig.cloud.unique() > 0, 60, "the first upload")
            rate = await _ingest_rate(rig)
            disk.fill()
            full = [await _stored_by_ledger(rig, 2.0) for _ in range(4)]  # 8 s with no byte free
            assert rig.gateway.alive(), rig.gateway.output()
            disk.free()
            freed, freed_wall = time.monotonic(), time.time()
            await until(lambda: _status_fresh(rig, after=freed_wall), 30, "a status file again")
            status_back = time.monotonic() - freed
            stalled_at = rig.outbox_total()
            await until(lambda: rig.outbox_total() > stalled_at + 1000, 30, "events stored again", step=0.1)
            storing_back = time.monotonic() - freed
            after = await _ingest_rate(rig)
            await rig.drained(240)
            log = rig.gateway.log.read_text(errors="replace")
            _report(
                "T06 data disk full 8 s at rate",
                {
                    "ingest ev/s before": round(rate),
                    "stored ev/s while full (per 2 s)": [round(r) for r in full],
                    "commit failures logged": log.count("outbox commit of"),
                    "freed->status written again s": round(status_back, 2),
                    "freed->1,000 more events stored s": round(storing_back, 2),
                    "ingest ev/s after": round(after),
                },
            )
            assert rig.gateway.alive(), rig.gateway.output()
            assert status_back <= 5.0 and storing_back <= 5.0
            assert after >= 0.5 * rate
            assert integrity_ok(rig.gateway.data / "outbox.db") == "ok"
        assert_clean(rig, "T06 at rate")


def _status_fresh(rig: Rig, after: float) -> bool:
    assert rig.gateway is not None
    status = rig.gateway.status() or {}
    return float(status.get("time", 0.0)) >= after


@pytest.mark.skipif(
    not LIBFAKETIME.exists(), reason="libfaketime not installed (apt-get install libfaketime)"
)
async def test_t10_wall_clock_steps_at_rate_lose_nothing_and_stall_nothing(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with Rig(tmp_path, mosquitto.port, banks=RATE, sync=UPLINK) as rig:
        assert rig.gateway is not None and rig.ledger is not None
        rig.start_gateway(faketime=True)
        await rig.wait_running(30)
        await until(lambda: rig.cloud.unique() > 0, 60, "the first upload")
        rates = []
        for offset in (0, -3600, 3600, 0):  # true time, back an hour, forward an hour, true time again
            rig.set_clock(offset)
            await asyncio.sleep(1.2)  # faketime re-reads its file each second
            rates.append(await _ingest_rate(rig, 3.0))
            rig.ledger.sample()
        await rig.drained(240)
        assert rig.gateway.alive(), rig.gateway.output()
        _report("T10 clock steps at rate", {"stored ev/s at 0, -1 h, +1 h, 0": [round(r) for r in rates]})
        # a wall-clock timer would stall for the hour or fire in a burst; monotonic ones keep their pace
        assert min(rates) >= 0.5 * max(rates) > 0
    assert_clean(rig, "T10 at rate")
