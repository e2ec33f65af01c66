"""A BACnet Real cannot hold NaN or 1e40: such writes are answered with the range and leave the priority array
as it was (NaN once became a JSON null, which relinquished the slot; 1e40 ended the command task unanswered).

The HVAC simulator and the gateway of test_bacnet_end_to_end; the requests come from a plain paho client."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from simulators.bacnet_hvac import HvacSimulator
from tests.drivers.bacnet.test_bacnet_end_to_end import sim, start_gateway, telemetry, wait
from tests.helpers import MosquittoProcess, MqttRecorder

pytestmark = pytest.mark.asyncio(loop_scope="module")
__all__ = ["sim"]  # the module's simulator fixture, used here too

BASE = "bacnet-range/acme/cmd/hq/vav-1/zone-temp-setpoint"
RANGE = "zone-temp-setpoint accepts -3.402823466e+38..3.402823466e+38 Cel"


async def test_non_finite_and_out_of_range_writes_are_refused_and_keep_the_slot(
    tmp_path: Path, sim: HvacSimulator, mosquitto: MosquittoProcess
) -> None:
    gateway = start_gateway(tmp_path, sim, mosquitto, "bacnet-range", mode="auto")
    recorder = MqttRecorder(mosquitto.port, f"{BASE}/result")
    events = MqttRecorder(mosquitto.port, "bacnet-range/acme/events/#")
    await gateway.start()
    try:
        await wait(events, lambda m: telemetry(m, "vav-1"))
        requests = {
            "set": json.dumps({"value": 21.5, "id": "set"}),
            "nan": json.dumps({"value": float("nan"), "id": "nan"}),  # what Python's json module writes
            "inf": json.dumps({"value": float("inf"), "id": "inf"}),
            "big": json.dumps({"value": 1e40, "id": "big"}),
            "low": json.dumps({"value": -1e39, "id": "low"}),
        }
        for payload in requests.values():
            recorder.publish(f"{BASE}/set", payload.encode())
        got = await wait(recorder, lambda m: len(m) >= len(requests))
    finally:
        await gateway.stop()
        recorder.close()
        events.close()
    answers = {a["request_id"]: a for a in (orjson.loads(p) for _, p, _ in got)}
    assert answers["set"]["ok"] is True
    assert answers["nan"]["reason"] == f"NaN is not a finite number: {RANGE}"
    assert answers["inf"]["reason"] == f"Infinity is not a finite number: {RANGE}"
    assert answers["big"]["reason"] == f"1e+40 is out of range: {RANGE}"
    assert answers["low"]["reason"] == f"-1e+39 is out of range: {RANGE}"
    assert not any(answers[r]["ok"] for r in ("nan", "inf", "big", "low"))
    assert sim.vavs[0].priority_array("zone-temp-setpoint")[7] == 21.5  # priority 8 still holds the write
