"""The downlink's state as an operator sees it: `edge run` in its own process with the cloud simulator as the
platform; `/v1/status` and `/v1/overview` read with httpx as a signed-in admin, and `edge status` run as a
command. Connected (with the entitlement answer's age and the last message id), then the platform goes down:
retrying, since when, and why."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from edge.api.accounts import AccountStore, accounts_path
from simulators.cloud import CloudSimulator
from tests.cloud_harness import simulator
from tests.downlink_harness import GATEWAY, add_cloud, result_of
from tests.e2e import load, write_config
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port, until

pytestmark = pytest.mark.timeout(120)
PASSWORD = "correct horse battery"


def _config(
    tmp_path: Path, mosquitto: MosquittoProcess, modbus: SimulatorProcess, cloud: CloudSimulator
) -> int:
    path = write_config(
        tmp_path / "edge.toml",
        mqtt_port=mosquitto.port,
        modbus_port=modbus.port,
        devices=1,
        tenants=("acme",),
    )
    port = free_port()
    path.write_text(path.read_text() + f'\n[api]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n')
    add_cloud(path, cloud, ("acme",))
    cloud.platform.set_entitlements("acme", ["solar", "alarms"])
    AccountStore(accounts_path(load(path)[0].data_dir)).add("root", PASSWORD, "admin", None)
    return port


async def _edge_status(path: Path, *options: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.cli", "status", "-c", str(path), *options, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    return out.decode()


async def _downlink(http: httpx.AsyncClient) -> dict[str, Any]:
    answer = await http.get("/v1/status")
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["downlink"]["acme"])


async def test_the_downlinks_state_shows_in_the_status_api_the_overview_and_edge_status(
    tmp_path: Path, mosquitto: MosquittoProcess, modbus: SimulatorProcess
) -> None:
    async with simulator("acme") as cloud:
        port = _config(tmp_path, mosquitto, modbus, cloud)
        path = tmp_path / "edge.toml"
        gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge.cli", "run", "-c", str(path), stderr=asyncio.subprocess.DEVNULL,
            env=dict(os.environ),
        )  # fmt: skip
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as http:

                async def signed_in() -> bool:
                    try:
                        answer = await http.post(
                            "/v1/session", json={"username": "root", "password": PASSWORD}
                        )
                    except httpx.TransportError:
                        return False
                    return answer.status_code == 200

                await until(signed_in, within=40.0, what="the gateway's API")

                async def connected() -> dict[str, Any] | None:
                    link = await _downlink(http)
                    return (
                        link
                        if link["state"] == "connected" and link["entitlements_age"] is not None
                        else None
                    )

                link = await until(connected, within=20.0, what="acme's downlink connected with an answer")
                assert link["since"] <= time.time() and link["last_error"] is None
                assert link["entitlements"] == ["solar", "alarms"] and link["entitlements_age"] < 30

                jti = cloud.platform.send(
                    "acme", GATEWAY, "point.write",
                    {"site": "roof", "device": "inv-01", "point": "power_limit", "value": 75},
                )  # fmt: skip
                assert (await result_of(cloud, "acme", jti))["status"] == "done"
                link = await _downlink(http)
                assert link["last_message"] == jti and time.time() - link["last_message_at"] < 30

                overview = (await http.get("/v1/overview", params={"tenant": "acme"})).json()["downlink"]
                assert overview["state"] == "connected" and overview["last_message"] == jti
                assert isinstance(overview["entitlements_age"], float)

                async def in_status_file() -> dict[str, Any] | None:
                    shown = orjson.loads(await _edge_status(path, "--json"))["downlink"].get("acme", {})
                    return shown if shown.get("last_message") == jti else None

                shown = await until(in_status_file, within=10.0, what="the message id in edge status --json")
                assert shown["state"] == "connected"

                lost_at = time.time()
                await cloud.set_down(True)

                async def retrying() -> dict[str, Any] | None:
                    link = await _downlink(http)
                    return link if link["state"] == "retrying" else None

                link = await until(retrying, within=20.0, what="acme's downlink retrying")
                assert link["since"] >= lost_at - 1 and link["failures"] >= 1 and link["last_error"]
                assert link["last_message"] == jti and link["entitlements"] == [
                    "solar",
                    "alarms",
                ]  # the last answer holds

                async def printed() -> str | None:
                    text = await _edge_status(path)
                    return text if "downlink of acme: retrying since" in text else None

                text = await until(printed, within=10.0, what="edge status saying the link is retrying")
                line = next(line for line in text.splitlines() if line.startswith("downlink of acme"))
                assert "last error:" in line and f"last message {jti}" in line, line
                assert "entitlements of acme from its platform: solar, alarms (answer" in text
                await cloud.set_down(False)
        finally:
            gateway.send_signal(signal.SIGTERM)
            await asyncio.wait_for(gateway.wait(), 30)
