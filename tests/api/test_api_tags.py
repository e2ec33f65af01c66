"""Semantic tags end to end (issue 23): a profile tags two inverter points with a Brick class and Haystack tags;
the gateway polls the simulator, and every consumer finds them by tag without reading names: the telemetry
events and the retained point topics carry them (a plain paho subscriber), `/v1/points?brick=&tag=` selects
by them (httpx), the WebSocket stream narrows to them (the websockets client), and Home Assistant discovery
takes its device classes from them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from packaging.specifiers import SpecifierSet
from websockets.sync.client import connect

from edge.bus.ha_entities import entity_for
from edge.bus.topics import Topics
from edge.sdk.drivers import DeviceSpec
from edge.sdk.events import TELEMETRY
from edge.sdk.points import PointConfig
from edge.sdk.versions import ADAPTORS
from simulators.modbus_inverter import InverterSimulator
from tests.api_harness import ApiGateway, api_gateway
from tests.helpers import MosquittoProcess, MqttRecorder, free_port

PROFILE = """
[profile]
name = "tagged-inverter"
driver = "modbus"
[defaults]
sunspec = true
[[points]]
name = "ac_power"
address = 40083
type = "int16"
unit = "W"
scale_factor = "w_sf"
brick = "Active_Power_Sensor"
haystack = ["point", "elec", "ac", "power", "sensor"]
[[points]]
name = "w_sf"
address = 40084
type = "sunssf"
publish = false
[[points]]
name = "frequency"
address = 40085
type = "uint16"
unit = "Hz"
scale_factor = "hz_sf"
brick = "Frequency_Sensor"
haystack = "point elec ac freq sensor"
[[points]]
name = "hz_sf"
address = 40086
type = "sunssf"
publish = false
[[points]]
name = "model_id"
address = 40069
"""


@pytest.fixture(scope="module")
def inverter() -> Iterator[int]:
    """The simulator on its own loop in a thread, as the gateway's (api_harness) runs on another."""
    port = free_port()
    loop = asyncio.new_event_loop()
    sim = InverterSimulator(1, port, sim_time="12:00", update_interval=0.2)
    loop.run_until_complete(sim.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.run_until_complete(sim.stop())
    loop.close()


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess, inverter: int
) -> Iterator[ApiGateway]:
    folder = tmp_path_factory.mktemp("tags")
    profile = folder / "tagged.toml"
    profile.write_text(PROFILE)
    device = (
        f'\n[[devices]]\nname = "inv-tagged"\ndriver = "modbus"\ntenant = "acme"\nsite = "roof"\n'
        f'profile = "{profile}"\npoll_interval = 0.2\n'
        f'connection = {{ host = "127.0.0.1", port = {inverter}, unit_id = 1 }}\n'
    )
    yield from api_gateway(folder, mosquitto.port, inverter, devices=0, more_config=device)


def test_events_and_retained_topics_carry_the_tags(api: ApiGateway, mosquitto: MosquittoProcess) -> None:
    events = MqttRecorder(mosquitto.port, "edge/acme/events/roof/inv-tagged")
    retained = MqttRecorder(mosquitto.port, "edge/acme/points/roof/inv-tagged/+")
    try:
        got = events.wait_for(lambda m: any(b"telemetry" in p for _, p, _ in m))
        latest = retained.wait_for(
            lambda m: {t.rsplit("/", 1)[-1] for t, _, _ in m} >= {"frequency", "model_id"}
        )
    finally:
        events.close()
        retained.close()
    event = next(orjson.loads(p) for _, p, _ in got if b"telemetry" in p)
    assert event["dataversion"] == "1.1"
    points = event["data"]["points"]
    assert points["ac_power"]["brick"] == "Active_Power_Sensor"
    assert points["ac_power"]["haystack"] == ["point", "elec", "ac", "power", "sensor"]
    assert points["frequency"]["haystack"] == ["point", "elec", "ac", "freq", "sensor"]
    assert "brick" not in points["model_id"] and "haystack" not in points["model_id"]
    on_topic = {t.rsplit("/", 1)[-1]: orjson.loads(p) for t, p, _ in latest}
    assert on_topic["frequency"]["brick"] == "Frequency_Sensor" and on_topic["frequency"]["value"] > 40
    assert "brick" not in on_topic["model_id"]
    # a module that handles telemetry 1.0 gets the same samples without the tags
    route = ADAPTORS.path(TELEMETRY, "1.1", SpecifierSet("==1.0"))
    assert route is not None and len(route) == 1
    older = route[0][1](event["data"])
    assert "brick" not in older["points"]["ac_power"] and older["points"]["ac_power"]["unit"] == "W"


def test_the_api_selects_points_by_brick_class_and_haystack_tags(api: ApiGateway) -> None:
    with api.client(api.token("acme")) as http:
        api.wait_for(
            lambda: http.get("/v1/points", params={"device": "inv-tagged"}).json()[0]["value"] is not None
        )
        by_class = http.get("/v1/points", params={"brick": "Frequency_Sensor"}).json()
        by_tags = http.get("/v1/points", params=[("tag", "elec,sensor"), ("tag", "power")]).json()
        everything = http.get("/v1/points", params={"device": "inv-tagged"}).json()
    assert [(p["device"], p["point"]) for p in by_class] == [("inv-tagged", "frequency")]
    assert (
        by_class[0]["haystack"] == ["point", "elec", "ac", "freq", "sensor"] and by_class[0]["unit"] == "Hz"
    )
    assert [p["point"] for p in by_tags] == ["ac_power"]
    assert {p["point"]: p["brick"] for p in everything} == {
        "ac_power": "Active_Power_Sensor",
        "frequency": "Frequency_Sensor",
        "model_id": None,
    }


def test_the_event_stream_narrows_to_tagged_points(api: ApiGateway) -> None:
    token = api.token("acme")
    with connect(
        f"{api.ws_url}?brick=Frequency_Sensor", additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        event = orjson.loads(ws.recv(timeout=10))
    assert event["type"] == TELEMETRY and list(event["data"]["points"]) == ["frequency"]
    with connect(
        f"{api.ws_url}?tag=power,elec", additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        deadline, seen = time.monotonic() + 10, set()
        while time.monotonic() < deadline and not seen:
            seen |= set(orjson.loads(ws.recv(timeout=10))["data"]["points"])
    assert seen == {"ac_power"}


def _entity(point: PointConfig, kind: str) -> dict[str, object]:
    spec = DeviceSpec("d", "acme", "roof", "bacnet", PointConfig(name="x"), (point,), 1.0, 1.0, "p")
    return entity_for(Topics("edge"), "gw", spec, point, kind, "homeassistant").config  # type: ignore[arg-type]


def test_home_assistant_device_classes_follow_the_tags() -> None:
    humidity = PointConfig(name="zone_rh_2", unit="%", brick="Zone_Air_Humidity_Sensor")
    untagged = PointConfig(name="zone_value_2", unit="%")
    assert _entity(humidity, "number")["device_class"] == "humidity"
    assert "device_class" not in _entity(untagged, "number")
    co2 = PointConfig(name="q1", unit="ppm", haystack=("point", "zone", "air", "co2", "sensor"))
    assert _entity(co2, "number")["device_class"] == "carbon_dioxide"
    occupancy = PointConfig(name="bi_7", brick="Occupancy_Sensor")
    assert _entity(occupancy, "bool")["device_class"] == "occupancy"
    fan = PointConfig(name="bi_1", brick="Fan_Status")
    assert _entity(fan, "bool")["device_class"] == "running"
    assert "device_class" not in _entity(PointConfig(name="bi_2"), "bool")
    temperature = PointConfig(name="t", unit="Cel", brick="Zone_Air_Humidity_Sensor")  # the unit says more
    assert _entity(temperature, "number")["device_class"] == "temperature"


def test_tags_are_checked_when_the_profile_is_loaded(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="String should match pattern"):
        PointConfig(name="x", brick="supply air temp")
    with pytest.raises(ValueError, match="String should match pattern"):
        PointConfig(name="x", haystack=("Supply",))
    assert PointConfig(name="x", haystack="zone, air ;temp").haystack == ("zone", "air", "temp")
