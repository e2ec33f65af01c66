"""Figures for the BACnet driver (slow; run with `pytest -m slow tests/drivers/bacnet/test_bacnet_perf.py -s`).

- reads per second of one 30-point AHU, with ReadPropertyMultiple and with ReadProperty only;
- the same with 1 AHU + 10 VAV boxes read at once (per device);
- COV latency: simulator value change -> the driver's `receiver.values`, and -> the MQTT event (end to end).

Everything runs in one process on loopback (simulator, driver, gateway, broker client), so the figures
include the simulator's own cost and are an order of magnitude, not a device's real speed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import statistics
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from drivers.bacnet import BacnetDriver
from edge.sdk.drivers import RawValue
from edge.sdk.points import PointFault
from simulators.bacnet_hvac import HvacSimulator
from tests.drivers.bacnet.test_bacnet_driver import free_udp_port, local, profile, spec
from tests.drivers.bacnet.test_bacnet_end_to_end import start_gateway
from tests.helpers import MosquittoProcess

pytestmark = pytest.mark.slow


def _summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return (
        f"median {statistics.median(ordered) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms, "
        f"max {ordered[-1] * 1000:.2f} ms (n={len(ordered)})"
    )


async def _reads_per_second(driver: BacnetDriver, device: Any, seconds: float) -> tuple[float, int, float]:
    """(reads per second, points per read, this process's CPU milliseconds per read)."""
    plan = driver.compile(device)
    session = driver.session(device)
    await session.connect()
    try:
        await session.read(plan)  # warm up (and detect RPM support)
        count, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            values = await session.read(plan)
            assert not any(isinstance(v, PointFault) for v in values)
            count += 1
        cpu_ms = (time.process_time() - cpu) * 1000 / count
        return count / (time.perf_counter() - start), len(plan.points), cpu_ms
    finally:
        await session.close()


async def test_reads_per_second_with_and_without_rpm() -> None:
    # the simulator in its own process, as a device would be: the client's cost is what is measured
    ip, port = "127.0.7.10", free_udp_port("127.0.7.10")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.bacnet_hvac", "--vav", "10", "--address", ip, "--port", str(port),
        "--update-interval", "1.0", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(20):
            ready = await process.stdout.readline()
        assert b"BACnet simulator" in ready
        sim = HvacSimulator(10, ip, port)  # not started: only its layout (addresses, instances) is used
        sim.devices = [_Layout(ip, port, k) for k in range(11)]  # type: ignore[misc]
        ahu_points = profile("ahu")
        driver = BacnetDriver()
        rpm, points, rpm_cpu = await _reads_per_second(driver, spec(sim, 1000, ahu_points), 3.0)
        rp, _, rp_cpu = await _reads_per_second(driver, spec(sim, 1000, ahu_points, read_method="rp"), 3.0)
        print(
            f"\nAHU {points} points, RPM (16 objects/request, 2 requests/read): {rpm:.0f} reads/s = "
            f"{rpm * points:.0f} points/s; gateway CPU {rpm_cpu:.1f} ms/read"
        )
        print(
            f"AHU {points} points, ReadProperty only (60 requests/read): {rp:.1f} reads/s = "
            f"{rp * points:.0f} points/s; gateway CPU {rp_cpu:.1f} ms/read"
        )
        shared = local()
        fleet = [(1000, ahu_points)] + [(1000 + k, profile("vav")) for k in range(1, 11)]
        for method in ("auto", "rp"):
            chosen = [spec(sim, i, pts, local_address=shared, read_method=method) for i, pts in fleet]
            rates = await asyncio.gather(*(_reads_per_second(driver, d, 3.0) for d in chosen))
            total_points = sum(rate * n for rate, n, _ in rates)
            label = "RPM" if method == "auto" else "ReadProperty"
            print(
                f"1 AHU + 10 VAV at once, {label}: AHU {rates[0][0]:.0f} reads/s, VAV median "
                f"{statistics.median(r for r, _, _ in rates[1:]):.0f} reads/s, {total_points:.0f} points/s in all"
            )
    finally:
        process.terminate()
        await process.wait()
    assert rpm > 2 * rp


class _Layout:
    """Where a simulated device listens (the simulator's `ips` layout), without running one here."""

    def __init__(self, ip: str, port: int, k: int) -> None:
        self.name = "ahu-1" if k == 0 else f"vav-{k}"
        self.instance = 1000 + k
        self.address = f"{ipaddress.IPv4Address(ip) + k}:{port}"


class _Receiver:
    def __init__(self) -> None:
        self.arrived: dict[Any, float] = {}
        self.event = asyncio.Event()

    def values(self, changes: Mapping[int, RawValue], sample_time: float | None = None) -> None:
        now = time.perf_counter()
        for value in changes.values():
            self.arrived.setdefault(value, now)
        self.event.set()

    def lost(self, reason: str) -> None:
        raise AssertionError(reason)


async def test_cov_latency_to_the_driver_and_to_mqtt(tmp_path: Path, mosquitto: MosquittoProcess) -> None:
    import paho.mqtt.client as mqtt

    async with HvacSimulator(1, "127.0.8.10", free_udp_port("127.0.8.10"), update_interval=1.0) as sim:
        sim.paused = True
        driver = BacnetDriver()
        device = spec(sim, 1001, profile("vav"), check_interval=60.0)
        session = driver.session(device)
        await session.connect()
        receiver = _Receiver()
        await session.subscribe(driver.compile(device), receiver)
        latencies = []
        try:
            for n in range(200):
                value = 30.0 + n * 0.25
                changed = time.perf_counter()
                sim.set_value(1001, "zone-temp", value)
                async with asyncio.timeout(2):
                    while value not in receiver.arrived:
                        receiver.event.clear()
                        await receiver.event.wait()
                latencies.append(receiver.arrived[value] - changed)
        finally:
            await session.close()
        print(f"\nCOV, simulator change -> receiver.values: {_summary(latencies)}")

        # end to end: the gateway publishes the change as an event; a paho subscriber timestamps its arrival
        arrived: dict[float, float] = {}
        lock = threading.Lock()

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            now = time.perf_counter()
            event = orjson.loads(msg.payload)
            zone = event.get("data", {}).get("points", {}).get("zone-temp")
            if zone is not None:
                with lock:
                    arrived.setdefault(zone["value"], now)

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
            client_id=f"perf-{free_udp_port()}",
        )
        client.on_message = on_message
        client.connect("127.0.0.1", mosquitto.port)
        client.subscribe("bacnet-perf/acme/events/hq/vav-1", qos=1)
        client.loop_start()
        gateway = start_gateway(tmp_path, sim, mosquitto, "bacnet-perf", mode="auto")
        await gateway.start()
        end_to_end = []
        try:
            await asyncio.sleep(1.0)  # subscribed, initial values published
            for n in range(60):
                value = 20.0 + n * 0.25
                changed = time.perf_counter()
                sim.set_value(1001, "zone-temp", value)
                deadline = changed + 3
                while time.perf_counter() < deadline:
                    with lock:
                        if value in arrived:
                            break
                    await asyncio.sleep(0.001)
                with lock:
                    end_to_end.append(arrived[value] - changed)
                await asyncio.sleep(0.05)
        finally:
            await gateway.stop()
            client.loop_stop()
            client.disconnect()
        print(f"COV, simulator change -> MQTT event at a subscriber: {_summary(end_to_end)}")
        assert statistics.median(latencies) < 0.05 and statistics.median(end_to_end) < 0.5
