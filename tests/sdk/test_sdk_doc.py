"""docs/sdk.md's two examples, as a newcomer would use them: the blocks marked `file=` are written into a
package of their own (not installed, found through extra entry points), and a real gateway runs them against a
device that answers JSON over HTTP (Python's own http.server), publishing on the real broker (read with paho)."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge.config import load_config
from edge.gateway import Gateway
from edge.plugins import PluginRegistry
from tests.helpers import MosquittoProcess, MqttRecorder, free_port, wait_port

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"
_BLOCK = re.compile(r"^```(?:python|toml) file=(?P<file>\S+)\n(?P<body>.*?)^```$", re.M | re.S)


def _write_doc_files(root: Path) -> list[str]:
    written = []
    for block in _BLOCK.finditer(DOC.read_text()):
        target = root / block["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block["body"])
        written.append(block["file"])
    (root / "myplugins" / "__init__.py").write_text("")
    return written


@pytest.fixture
def doc_plugins(tmp_path: Path) -> Iterator[Path]:
    written = _write_doc_files(tmp_path)
    assert "myplugins/http_json/driver.py" in written and "myplugins/peak/module.py" in written
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "myplugins" or m.startswith("myplugins.")]:
            del sys.modules[name]


@pytest.fixture
def json_device(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A device answering JSON over HTTP: the standard library's file server on a file the test rewrites."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "status").write_bytes(orjson.dumps({"meters": [{"power": 120.0, "total": 5000}]}))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(www)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield www / "status", port
    finally:
        server.terminate()
        server.wait(10)


def _config(root: Path, broker: int, device_port: int) -> Path:
    config = root / "config" / "edge.toml"
    config.write_text(
        f'[gateway]\nid = "gw"\ndata_dir = "{root / "data"}"\n'
        f'[bus]\nmode = "external"\nport = {broker}\ntopic_prefix = "sdkdoc"\n'
        '[[tenants]]\nid = "acme"\nentitlements = ["peak"]\n'
        '[[tenants]]\nid = "other"\n'
        '[[sites]]\nid = "hq"\n'
        '[[devices]]\nname = "meter-1"\ndriver = "http_json"\ntenant = "acme"\nsite = "hq"\n'
        f'profile = "meter.toml"\npoll_interval = 0.2\nconnection = {{ url = "http://127.0.0.1:{device_port}/status" }}\n'
        '[[devices]]\nname = "meter-9"\ndriver = "http_json"\ntenant = "other"\nsite = "hq"\n'
        f'profile = "meter.toml"\npoll_interval = 0.2\nconnection = {{ url = "http://127.0.0.1:{device_port}/status" }}\n'
        '[[modules]]\nname = "peak"\nconfig = { min_rise = 5.0, summary_every = 0.2 }\n'
    )
    return config


def _registry() -> PluginRegistry:
    return PluginRegistry.from_entry_points(
        extra=[
            EntryPoint("http_json", "myplugins.http_json:HttpJsonDriver", "edge.drivers"),
            EntryPoint("peak", "myplugins.peak:Peak", "edge.modules"),
        ]
    )


Messages = list[tuple[str, bytes, bool]]


def _events(messages: Messages, type: str, device: str | None = None) -> list[dict[str, Any]]:
    """The CloudEvents of one type received on the tenants' event topics (optionally one device's)."""
    found = []
    for topic, payload, _ in messages:
        if "/events/" not in topic or (device is not None and not topic.endswith(f"/hq/{device}")):
            continue
        event = orjson.loads(payload)
        if event["type"] == type:
            found.append(event)
    return found


async def test_the_sdk_guides_driver_and_module_run_in_a_real_gateway(
    doc_plugins: Path,
    json_device: tuple[Path, int],
    mosquitto: MosquittoProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    status, device_port = json_device
    registry = _registry()
    gateway = Gateway(load_config(_config(doc_plugins, mosquitto.port, device_port), registry), registry)
    recorder = MqttRecorder(mosquitto.port, "sdkdoc/#")
    caplog.set_level(logging.INFO)
    await gateway.start()
    try:

        def telemetry_of(device: str, messages: Messages) -> list[dict[str, Any]]:
            return _events(messages, "org.edgegw.telemetry", device)

        got = await asyncio.to_thread(recorder.wait_for, lambda m: telemetry_of("meter-1", m), 15)
        points = telemetry_of("meter-1", got)[0]["data"]["points"]
        assert points["power"]["value"] == 120.0 and points["power"]["unit"] == "W"
        assert (
            points["energy"]["value"] == 5.0 and points["energy"]["quality"] == "good"
        )  # scaled by the kernel

        status.write_bytes(orjson.dumps({"meters": [{"power": 180.0}]}))  # a new peak; "total" gone
        got = await asyncio.to_thread(
            recorder.wait_for,
            lambda m: [e for e in _events(m, "org.example.peak") if e["data"]["value"] == 180.0],
            15,
        )
        bad = [
            e["data"]["points"]["energy"]
            for e in telemetry_of("meter-1", got)
            if e["data"]["points"]["energy"]["quality"] == "bad"
        ]
        assert bad and "no 'meters.0.total' in the answer" in bad[-1]["reason"]
        peaks = _events(got, "org.example.peak")
        assert {(e["data"]["point"], e["data"]["value"]) for e in peaks} >= {
            ("hq/meter-1/power", 120.0),
            ("hq/meter-1/power", 180.0),
        }
        assert all(e["tenantid"] == "acme" for e in peaks)  # "other" is not entitled to the module
        assert telemetry_of("meter-9", got)  # ...although its meter is polled all the same
        await asyncio.sleep(0.5)
        assert "tenant acme: " in caplog.text and "peaks kept" in caplog.text  # the kernel's timer ran
        assert "tenant other: " not in caplog.text
    finally:
        await gateway.stop()
        recorder.close()
