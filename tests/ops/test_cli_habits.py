"""What a user expects of any command line: `--version`, shell completion, `--json` on list and show commands
(parsable, the table's fields), whole values when the output is piped. Run as `python -m edge.cli`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from edge.cli.device_cmd import shared_reason
from edge.sdk.version import KERNEL_API_VERSION
from tests.e2e import write_config
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port

EDGE = [sys.executable, "-m", "edge.cli"]


def edge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`edge ...` with stdout a pipe, as in a script."""
    return subprocess.run(
        [*EDGE, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def as_json(*args: str) -> Any:
    result = edge(*args, "--json")
    assert result.returncode in (0, 1, 4), result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def config(tmp_path: Path, simulator: SimulatorProcess) -> Path:
    return write_config(tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=simulator.port, devices=2)


def test_version_names_the_package_and_the_kernel_api() -> None:
    result = edge("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"edge {version('edge-gateway')} (kernel API {KERNEL_API_VERSION})"


def test_shell_completion_is_offered_and_completes_commands_of_the_kernel_and_plug_ins() -> None:
    assert "--install-completion" in edge("--help", env={"COLUMNS": "200"}).stdout
    script = edge("--show-completion", "bash")
    assert script.returncode == 0 and "_EDGE_COMPLETE=complete_bash" in script.stdout
    for typed, expected in (("dev", "device"), ("al", "alarm"), ("device t", "test")):
        words = f"edge {typed}"
        completed = edge(
            env={
                "_EDGE_COMPLETE": "complete_bash",
                "COMP_WORDS": words,
                "COMP_CWORD": str(len(words.split()) - 1),
            }
        )
        assert completed.returncode == 0 and expected in completed.stdout.split(), completed.stdout


def test_json_of_device_list_and_test_carries_the_table_fields(config: Path) -> None:
    devices = as_json("device", "list", "-c", str(config))
    assert [d["device"] for d in devices] == ["inv-01", "inv-02"]
    assert devices[0] == {
        "device": "inv-01",
        "driver": "modbus",
        "tenant": "acme",
        "site": "roof",
        "profile": "sunspec-inverter",
        "points": devices[0]["points"],
        "mode": "poll",  # Modbus cannot push
        "configured_mode": "auto",
        "poll_interval": 0.2,
    }
    table = edge("device", "list", "-c", str(config)).stdout
    for heading in ("device", "driver", "tenant", "site", "profile", "points", "mode", "poll (s)"):
        assert heading in table
    row = next(line for line in table.splitlines() if "inv-01" in line)
    assert all(str(devices[0][k]) in row for k in ("driver", "tenant", "site", "profile", "points", "mode"))
    points = as_json("device", "test", "inv-02", "-c", str(config))
    assert {tuple(p) for p in points} == {("point", "value", "unit", "quality", "raw", "reason")}
    by_name = {p["point"]: p for p in points}
    assert by_name["ac_power"]["quality"] == "good" and isinstance(by_name["ac_power"]["value"], int | float)


def test_device_list_says_which_devices_push_and_which_are_polled(config: Path) -> None:
    """BACnet takes COV where the mode is "auto" and polls with `mode = "poll"` (the trial's second controller)."""
    with config.open("a") as f:
        for name, mode in (("vav-cov", "auto"), ("vav-polled", "poll")):
            f.write(
                f'[[devices]]\nname = "{name}"\ndriver = "bacnet"\ntenant = "acme"\nsite = "roof"\n'
                f'profile = "vav"\nmode = "{mode}"\n'
                'connection = { address = "127.0.0.5", device_instance = 5005, local_address = "127.0.0.1/8:47809" }\n'
            )
    by_name = {d["device"]: d for d in as_json("device", "list", "-c", str(config))}
    assert {n: (d["mode"], d["configured_mode"]) for n, d in by_name.items()} == {
        "inv-01": ("poll", "auto"),
        "inv-02": ("poll", "auto"),
        "vav-cov": ("push", "auto"),
        "vav-polled": ("poll", "poll"),
    }
    table = edge("device", "list", "-c", str(config)).stdout.splitlines()
    assert " push " in next(line for line in table if "vav-cov" in line)
    assert " poll " in next(line for line in table if "vav-polled" in line)


def test_device_test_on_a_dead_device_says_the_shared_reason_once(tmp_path: Path, config: Path) -> None:
    """Trial of 2026-12-07: a dead device repeated one long reason for each of its points."""
    dead = write_config(tmp_path / "dead.toml", mqtt_port=free_port(), modbus_port=free_port(), devices=1)
    table = edge("device", "test", "inv-01", "-c", str(dead))
    points = as_json("device", "test", "inv-01", "-c", str(dead))
    assert table.returncode == 1 and len(points) > 10
    reason = points[0]["reason"]
    assert reason.startswith("cannot connect to 127.0.0.1:") and all(p["reason"] == reason for p in points)
    assert table.stdout.count(reason) == 1  # once, not once a row
    assert f"all {len(points)} points: {reason}" in table.stdout
    assert all(p["point"] in table.stdout for p in points) and table.stdout.count(" bad ") == len(points)
    live = edge("device", "test", "inv-01", "-c", str(config))  # the simulator answers: no shared line
    assert live.returncode == 0 and "points:" not in live.stdout


def test_a_shared_reason_leaves_the_points_that_differ_their_own() -> None:
    rows = [{"point": f"p{n}", "reason": "timed out"} for n in range(5)]
    rows += [{"point": "p5", "reason": "illegal data address"}, {"point": "p6", "reason": None}]
    assert shared_reason(rows) == ("timed out", 5)
    assert shared_reason(rows[4:]) is None  # one point with each reason: each row says its own
    assert shared_reason([{"point": "p", "reason": None}] * 3) is None


def test_json_of_tenants_events_and_modules(config: Path) -> None:
    assert as_json("tenant", "list", "-c", str(config)) == [
        {"tenant": "acme", "name": "", "entitlements": ["solar"]},
        {"tenant": "globex", "name": "", "entitlements": ["solar"]},
    ]
    types = as_json("events", "types")
    assert {"type": "org.edgegw.telemetry", "dataversion": "1.1"} in types
    assert all(set(t) == {"type", "dataversion"} for t in types)
    modules = as_json("module", "list", "-c", str(config))
    keys = {"module", "version", "run_mode", "entitlement", "wanted", "state", "handled", "detail"}
    assert modules and all(set(m) == keys for m in modules)
    assert {m["module"] for m in modules} >= {"alarms", "billing", "solar"}
    health = edge("module", "health", "-c", str(config), "--json")
    assert (
        health.returncode == 4 and json.loads(health.stdout) == []
    )  # never ran: nothing live, said on stderr
    assert "not running" in health.stderr


def test_discovery_prints_whole_values_when_piped_and_json_on_request(simulator: SimulatorProcess) -> None:
    target = ["-t", "host=127.0.0.1", "-t", f"port={simulator.port}", "-t", "units=1-2", "-t", "timeout=0.2"]
    table = edge("device", "discover", "modbus", *target)
    assert table.returncode == 0, table.stderr
    identity = (
        "sunspec_base=40000, manufacturer=EdgeSim, model=PV-10K, version=1.0.0, serial=SIM00001, models=1,103"
    )
    connection = f"host=127.0.0.1, port={simulator.port}, unit_id=1"
    lines = table.stdout.splitlines()
    assert any(identity in line and connection in line for line in lines), table.stdout
    assert "…" not in table.stdout
    found = as_json("device", "discover", "modbus", *target)
    assert [d["connection"] for d in found] == [
        {"host": "127.0.0.1", "port": simulator.port, "unit_id": unit} for unit in (1, 2)
    ]
    assert set(found[0]) == {"address", "identity", "points", "profile", "connection"}
    assert found[0]["identity"]["serial"] == "SIM00001" and found[0]["profile"] == "sunspec-inverter"


def test_json_of_every_list_is_an_array_even_when_empty(config: Path) -> None:
    """The trial of 2026-12-07: `webhook list` and `tenant credentials list` printed JSON lines, and nothing at
    all when empty; `config history` and `webhook dead-letters` had no --json."""
    assert as_json("webhook", "list", "-t", "acme", "-c", str(config)) == []
    assert as_json("tenant", "credentials", "list", "acme", "-c", str(config)) == []
    assert as_json("config", "history", "-c", str(config)) == []
    with config.open("a") as f:
        f.write('[webhooks]\nallow_networks = ["127.0.0.1/32"]\n')
    added = edge("webhook", "add", "http://127.0.0.1:9/in", "-t", "acme", "-c", str(config))
    assert added.returncode == 0, added.stderr
    assert as_json("webhook", "dead-letters", added.stdout.split()[0], "-t", "acme", "-c", str(config)) == []
    (listed,) = as_json("webhook", "list", "-t", "acme", "-c", str(config))
    assert listed["url"] == "http://127.0.0.1:9/in" and "secret" not in listed


def test_module_views_of_a_running_gateway_without_modules(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    """The trial: with `edge run` up and no module configured, `module list` and `module health` said "the
    gateway is not running" (health exiting 4)."""
    config = write_config(
        tmp_path / "edge.toml", mqtt_port=mosquitto.port, modbus_port=free_port(), devices=1
    )
    gateway = subprocess.Popen(
        [*EDGE, "run", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while edge("status", "-c", str(config)).returncode == 4:  # not live yet
            assert gateway.poll() is None and time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.3)
        health = edge("module", "health", "-c", str(config), "--json")
        assert health.returncode == 0 and json.loads(health.stdout) == [], health.stderr
        assert "not running" not in health.stderr and "configures no module" in health.stderr
        listed = edge("module", "list", "-c", str(config))
        assert "not running" not in listed.stdout + listed.stderr
        assert "configures no module" in listed.stdout + listed.stderr
    finally:
        gateway.terminate()
        gateway.wait(30)
        assert gateway.stderr is not None
        gateway.stderr.close()
