"""Node-RED + node-red-contrib-modbus as the benchmark's peer.

The flow's shape is checked here without Node-RED; the end-to-end case (slow: the first run npm-installs
Node-RED into its own folder, see `bench.peer_nodered.default_install_dir`) runs the generated flow in a
real Node-RED against a real Mosquitto and bank simulator, and counts with a paho client.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from bench.peer_common import bank_simulator, local_broker
from bench.peer_nodered import MODBUS_NODES_VERSION, NODE_RED_VERSION, flow, run_nodered
from tests.bench.peer_checks import assert_delivered_and_measured

DEVICES = [("127.0.0.1", 5020, 1), ("127.0.0.1", 5020, 2), ("127.0.0.1", 5021, 1)]


def test_the_flow_has_one_client_and_one_read_of_all_registers_per_device() -> None:
    nodes = flow(DEVICES, 50, 0.05, 1883)
    kinds = Counter(n["type"] for n in nodes)
    assert kinds == {
        "modbus-client": 3,
        "modbus-read": 3,
        "function": 1,
        "mqtt out": 1,
        "mqtt-broker": 1,
        "tab": 1,
    }
    clients = {n["id"]: n for n in nodes if n["type"] == "modbus-client"}
    assert sorted((c["tcpPort"], c["unit_id"]) for c in clients.values()) == [
        ("5020", "1"),
        ("5020", "2"),
        ("5021", "1"),
    ]
    function = next(n for n in nodes if n["type"] == "function")
    for read in (n for n in nodes if n["type"] == "modbus-read"):
        assert (read["adr"], read["quantity"], read["rate"], read["rateUnit"]) == ("0", "50", "50", "ms")
        assert read["server"] in clients
        assert read["wires"] == [[function["id"]], []]
    mqtt_out = next(n for n in nodes if n["type"] == "mqtt out")
    assert function["wires"] == [[mqtt_out["id"]]] and mqtt_out["qos"] == "1"


def test_poll_periods_must_be_whole_milliseconds() -> None:
    with pytest.raises(ValueError, match="whole milliseconds"):
        flow(DEVICES, 10, 0.0125, 1883)


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first run may install Node-RED
@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="needs node and npm")
@pytest.mark.skipif(shutil.which("mosquitto", path="/usr/sbin:/usr/bin") is None, reason="needs mosquitto")
def test_nodered_delivers_every_point(tmp_path: Path) -> None:
    devices, registers, poll = 3, 10, 0.5
    offered = devices * registers / poll
    with (
        local_broker(tmp_path / "broker") as broker_port,
        bank_simulator(devices, registers, tmp_path / "sim") as endpoints,
    ):
        assert len({port for _host, port, _unit in endpoints}) == 1  # three units behind one port
        result = run_nodered(
            workdir=tmp_path / "nr",
            broker_port=broker_port,
            devices=endpoints,
            registers=registers,
            poll_interval=poll,
            duration=4.0,
            warmup=1.0,
        )
    assert result.name == f"node-red {NODE_RED_VERSION} + node-red-contrib-modbus {MODBUS_NODES_VERSION}"
    assert_delivered_and_measured(result, offered)
    assert f"{devices} Modbus TCP connections open" in result.notes
    assert "(0 errors)" in result.notes
