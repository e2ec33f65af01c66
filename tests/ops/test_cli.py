"""The `edge` command as a technician uses it: run (with its embedded broker), device list/test, demo."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.api.accounts import AccountStore
from tests.e2e import write_config
from tests.helpers import MqttRecorder, SimulatorProcess, free_port, wait_port, wait_until

EDGE = [sys.executable, "-m", "edge.cli"]


def test_run_starts_its_own_broker_publishes_and_stops_cleanly_on_sigterm(
    tmp_path: Path, simulator: SimulatorProcess
) -> None:
    mqtt_port = free_port()
    config = write_config(
        tmp_path / "edge.toml", mqtt_port=mqtt_port, modbus_port=simulator.port, devices=2, mode="embedded"
    )
    # a permissive shell umask: the data directory `edge run` creates must still be the gateway's alone
    gateway = subprocess.Popen(
        [*EDGE, "run", "-c", str(config)], stderr=subprocess.PIPE, text=True, umask=0o022
    )
    try:
        wait_port(mqtt_port, 20)
        recorder = MqttRecorder(mqtt_port, "edge/+/events/#")
        got = recorder.wait_for(lambda m: len(m) >= 4)
        recorder.close()
        assert {orjson.loads(p)["type"] for _, p, _ in got} >= {"org.edgegw.telemetry"}
        status_file = tmp_path / "data" / "status.json"
        wait_until(status_file.exists, 10, "the status file", step=0.1)
        status = json.loads(status_file.read_text())
        assert status["devices"] == 2 and status["events_stored"] > 0 and status["bus_connected"]
        _assert_private(tmp_path / "data")
        gateway.send_signal(signal.SIGTERM)
        _, stderr = gateway.communicate(timeout=20)
    finally:
        if gateway.poll() is None:
            gateway.kill()
    assert gateway.returncode == 0, stderr
    assert "gateway gw-test stopped" in stderr
    with pytest.raises(OSError):  # the embedded broker went with it
        wait_port(mqtt_port, 0.5)


def _assert_private(data_dir: Path) -> None:
    """The data directory 0700 and every file in it 0600 (the outbox's -wal and -shm too); the broker's
    directory may let its group (the broker's own account) through, nothing more."""
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert {"outbox.db", "outbox.db-wal", "outbox.db-shm", "status.json", "gateway.lock"} <= {
        p.name for p in files
    }
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"
    for path in (p for p in data_dir.rglob("*") if p.is_dir()):
        assert stat.S_IMODE(path.stat().st_mode) & 0o027 == 0, f"{path} is {oct(path.stat().st_mode)}"


def test_device_list_and_test_read_every_point(tmp_path: Path, simulator: SimulatorProcess) -> None:
    config = write_config(
        tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=simulator.port, devices=2
    )
    listing = subprocess.run(
        [*EDGE, "device", "list", "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0 and "inv-01" in listing.stdout and "sunspec-inverter" in listing.stdout
    test = subprocess.run(
        [*EDGE, "device", "test", "inv-02", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert test.returncode == 0, test.stdout + test.stderr
    for point in ("ac_power", "lifetime_energy", "dc_voltage", "operating_state", "cabinet_temperature"):
        assert point in test.stdout
    assert "good" in test.stdout and "bad" not in test.stdout
    unknown = subprocess.run(
        [*EDGE, "device", "test", "inv-09", "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode == 1 and "no device named 'inv-09'" in unknown.stderr


def test_device_test_of_an_unreachable_device_shows_bad_quality_and_fails(tmp_path: Path) -> None:
    config = write_config(tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=free_port(), devices=1)
    result = subprocess.run(
        [*EDGE, "device", "test", "inv-01", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 1
    assert "bad" in result.stdout and "cannot connect" in result.stdout


def test_demo_runs_simulator_gateway_and_broker_then_stops_on_ctrl_c(tmp_path: Path) -> None:
    mqtt_port, modbus_port, cloud_port, api_port = free_port(), free_port(), free_port(), free_port()
    demo = subprocess.Popen(
        [
            *EDGE,
            "demo",
            "--devices",
            "3",
            "--vavs",
            "1",
            "--lifts",
            "1",
            "--data-dir",
            str(tmp_path / "demo"),
            "--mqtt-port",
            str(mqtt_port),
            "--modbus-port",
            str(modbus_port),
            "--cloud-port",
            str(cloud_port),
            "--api-port",
            str(api_port),
        ],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_port(mqtt_port, 30)
        recorder = MqttRecorder(mqtt_port, "edge/#")
        expected = {
            "edge/acme/events/acme-hq/inv-01",
            "edge/globex/events/globex-plant/inv-03",
            "edge/acme/points/acme-hq/inv-01/ac_power",
            "edge/acme/events/acme-hq/ahu-1",  # BACnet
            "edge/globex/events/globex-plant/lift-1",  # OPC UA
        }
        recorder.wait_for(lambda m: {t for t, _, _ in m} >= expected, 40)
        recorder.close()

        def both_uploaded() -> dict[str, dict[str, int]] | None:
            stats = httpx.get(f"http://127.0.0.1:{cloud_port}/_sim/stats", timeout=5).json()["tenants"]
            return stats if all(stats.get(t, {}).get("unique", 0) > 0 for t in ("acme", "globex")) else None

        stats = wait_until(both_uploaded, 30, "both tenants' events in their cloud", step=0.5)
        assert all(stats[t]["unique"] > 0 and stats[t]["gaps"] == 0 for t in ("acme", "globex")), stats

        def from_the_cloud() -> list[dict[str, object]] | None:  # the demo's command and deployment
            url = f"http://127.0.0.1:{cloud_port}/_sim/platform/acme/results"
            results: list[dict[str, object]] = httpx.get(url, timeout=5).json()["results"]
            done = {r["kind"] for r in results if r["status"] == "done"}
            return results if done >= {"point.write", "deployment"} else None

        wait_until(from_the_cloud, 60, "the demo's command and deployment done", step=0.5)
        scraped = httpx.get(
            f"http://127.0.0.1:{api_port}/metrics", timeout=5
        ).text  # Prometheus' parser reads it
        families = {f.name: f for f in text_string_to_metric_families(scraped)}
        assert sum(s.value for s in families["edge_device_up"].samples) == 7  # and the deployed inv-04
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
        _, stderr = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode == 0, stderr
    assert f"mosquitto_sub -v -h 127.0.0.1 -p {mqtt_port} -t 'edge/#'" in stderr
    assert re.search(r"devices up (6/6|7/7)", stderr), stderr  # 7 once the deployed inverter is polled
    console = re.search(r"console: (\S+)  sign in as 'demo', password (\S+)", stderr)
    assert console is not None and console.group(1) == f"http://127.0.0.1:{api_port}/console/", stderr
    accounts = AccountStore(tmp_path / "demo" / "accounts.json")
    assert accounts.verify("demo", console.group(2)) is not None  # the printed password signs in
    assert "point.write acme-hq/inv-01.power_limit -> done" in stderr  # printed by the cloud simulator
    assert "-> done {'added': ['inv-04']" in stderr  # a device deployed to the running gateway
    with pytest.raises(OSError):
        wait_port(modbus_port, 0.5)


def test_device_add_writes_a_valid_device_and_keeps_comments(tmp_path: Path) -> None:
    config = write_config(tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=5020, devices=1)
    config.write_text("# site notes: keep me\n" + config.read_text())
    added = subprocess.run(
        [*EDGE, "device", "add", "inv-09", "--driver", "modbus", "--tenant", "acme", "--site", "roof",
         "--profile", "sunspec-inverter", "--connection", "host=10.0.0.9", "--connection", "unit_id=9", "-c", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    text = config.read_text()
    assert text.startswith("# site notes: keep me")
    listing = subprocess.run(
        [*EDGE, "device", "list", "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert "inv-09" in listing.stdout
    before = config.read_text()
    refused = subprocess.run(
        [*EDGE, "device", "add", "inv-10", "--driver", "modbus", "--tenant", "nobody", "--site", "roof",
         "--profile", "sunspec-inverter", "--connection", "host=10.0.0.10", "--connection", "port=99999", "-c", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "unknown tenant 'nobody'" in refused.stderr and "devices[2] (inv-10).connection" in refused.stderr
    assert str(config) in refused.stderr and ".edge-" not in refused.stderr
    assert config.read_text() == before  # an invalid addition leaves the file untouched


def test_discover_with_an_unknown_driver_or_bad_target_says_why() -> None:
    result = subprocess.run(
        [*EDGE, "device", "discover", "canbus"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "no such driver" in result.stderr
    result = subprocess.run(
        [*EDGE, "device", "discover", "bacnet", "-t", "colour=blue"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "discovery failed" in result.stderr and "Traceback" not in result.stderr


def test_point_write_goes_through_the_running_gateway(tmp_path: Path, mosquitto: object) -> None:
    sim = SimulatorProcess(free_port(), 1, ["--sim-time", "12:00"])
    sim.start()
    port = mosquitto.port  # type: ignore[attr-defined]
    config = write_config(
        tmp_path / "edge.toml", mqtt_port=port, modbus_port=sim.port, devices=1, prefix="pw"
    )
    gateway = subprocess.Popen([*EDGE, "run", "-c", str(config)], stderr=subprocess.DEVNULL)
    try:
        recorder = MqttRecorder(port, "pw/acme/points/roof/inv-01/power_limit")
        recorder.wait_for(lambda m: len(m) > 0)
        recorder.close()
        ok = subprocess.run(
            [*EDGE, "point", "write", "inv-01", "power_limit", "55", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ok.returncode == 0, ok.stderr
        assert "inv-01.power_limit = 55: written" in ok.stdout
        refused = subprocess.run(
            [*EDGE, "point", "write", "inv-01", "ac_power", "1", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1 and "not writable" in refused.stderr
    finally:
        gateway.terminate()
        gateway.wait(20)
        sim.stop()
