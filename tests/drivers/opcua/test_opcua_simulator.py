"""The lift simulator as a device: plausible movement, fault injection, and its command line."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys

from asyncua import Client

from simulators.opcua_lift import FAULT_DOOR, FAULT_STUCK, FLOOR_HEIGHT_M, LiftSimulator, unit_id
from tests.helpers import free_port, wait_port


def test_lifts_make_plausible_trips_on_their_own() -> None:
    sim = LiftSimulator(4840, 3, floors=8, speed=3.0, door_time=1.0, dwell_time=2.0, idle_time=(1.0, 3.0))
    history: list[list[tuple[int, str, bool, float]]] = [[] for _ in sim.lifts]
    for _ in range(600):  # 10 simulated minutes, 1 s at a time
        sim.advance(1.0)
        for n in range(1, 4):
            s = sim.state(n)
            history[n - 1].append((s.current_floor, s.direction, s.door_open, s.position))
            assert 0 <= s.current_floor < 8 and 0.0 <= s.position <= 7 * FLOOR_HEIGHT_M
            assert not (s.door_open and s.direction != "idle")  # doors never open while moving
            assert 0.0 <= s.car_load <= 1000.0
    for n, samples in enumerate(history, start=1):
        state = sim.state(n)
        assert state.trip_counter >= 10 and state.run_hours > 0.0
        assert len({floor for floor, *_ in samples}) >= 5  # it serves many floors
        steps = [abs(b[3] - a[3]) for a, b in itertools.pairwise(samples)]
        assert max(steps) <= 3.0 + 1e-9  # never faster than its rated speed
    assert len({sim.state(n).trip_counter for n in (1, 2, 3)}) > 1  # each lift has its own life


def test_faults_stop_the_lift_until_reset() -> None:
    sim = LiftSimulator(4840, 2, auto=True, idle_time=(0.5, 1.0))
    sim.stick(1)
    stuck = sim.state(1)
    assert stuck.fault_code == FAULT_STUCK and not stuck.in_service and stuck.position % FLOOR_HEIGHT_M
    sim.door_fault(2)
    sim.advance(30.0)
    assert sim.state(1).position == stuck.position and sim.state(1).trip_counter == stuck.trip_counter
    assert sim.state(2).fault_code == FAULT_DOOR and sim.state(2).door_open
    sim.clear(1)
    sim.clear(2)
    assert sim.state(1).position % FLOOR_HEIGHT_M == 0.0 and sim.state(1).in_service
    sim.advance(30.0)
    assert sim.state(1).trip_counter > stuck.trip_counter and not sim.state(2).fault_code


def test_unit_ids_follow_opc_ua_part_8() -> None:
    assert unit_id("CEL") == 4408652 and unit_id("P1") == 20529


async def test_command_line_serves_until_sigterm() -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "simulators.opcua_lift", "--port", str(port), "--lifts", "3"]
    proc = await asyncio.to_thread(subprocess.Popen, cmd, stdout=subprocess.PIPE, text=True)
    try:
        await asyncio.to_thread(wait_port, port, 20)
        async with Client(f"opc.tcp://127.0.0.1:{port}/lift", timeout=5) as client:
            ns = await client.get_namespace_index("urn:edge-gw:sim:lift")
            floor = await client.get_node(f"ns={ns};s=Lift3.CurrentFloor").read_value()
        assert isinstance(floor, int)
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert out.count("\n") == 1 and "3 lifts at opc.tcp://127.0.0.1:" in out
