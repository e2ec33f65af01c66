"""The downlink end to end: cloud simulator (platform side) -> long-poll -> gateway (real Mosquitto, Modbus
simulator, SQLite) -> command path -> result event -> cloud_sync -> the simulator. Messages are signed by the
test with pyjwt (independent of the gateway's joserfc), or by the simulator."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from cryptography.hazmat.primitives.asymmetric import ec

from edge.gateway import Gateway
from simulators.cloud import CloudSimulator
from tests.cloud_harness import simulator
from tests.downlink_harness import GATEWAY, add_cloud, claims, result_of, send, sign
from tests.e2e import load, write_config
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port, until

DEVICES = 4
pytestmark = pytest.mark.timeout(90)


def _config(
    tmp_path: Path, mosquitto: MosquittoProcess, modbus: SimulatorProcess, cloud: CloudSimulator
) -> Path:
    path = write_config(
        tmp_path / "edge.toml", mqtt_port=mosquitto.port, modbus_port=modbus.port, devices=DEVICES
    )
    document = tomlkit.parse(path.read_text())
    dead = free_port()  # nothing listens there: the device is down
    document["devices"].append(
        {
            "name": "inv-dead",
            "driver": "modbus",
            "tenant": "acme",
            "site": "roof",
            "profile": "sunspec-inverter",
            "poll_interval": 0.5,
            "timeout": 0.3,
            "connection": {"host": "127.0.0.1", "port": dead, "unit_id": 1},
        }
    )
    path.write_text(tomlkit.dumps(document))
    return add_cloud(path, cloud, ("acme", "globex"), per_tenant={"acme": {"entitlements": False}})


async def _results(cloud: CloudSimulator, tenant: str, jti: str, count: int) -> list[dict[str, Any]]:
    """The first `count` results reported for one message id (a replay is reported again)."""

    def found() -> list[dict[str, Any]]:
        return [r for r in cloud.platform.tenants[tenant].results if r["id"] == jti]

    await until(lambda: len(found()) >= count, within=15.0)
    return found()


def _write(tenant: str, device: str, value: float, **options: Any) -> dict[str, Any]:
    return claims(
        tenant, "point.write", site="roof", device=device, point="power_limit", value=value, **options
    )


def _tampered(token: str) -> str:
    """The same message with its value changed and its signature kept (the id stays: a random id may hold "80")."""
    head, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["value"] = 99
    tampered = json.dumps(body, separators=(",", ":")).encode()
    return ".".join((head, base64.urlsafe_b64encode(tampered).rstrip(b"=").decode(), signature))


async def test_commands_from_the_platform_run_through_the_command_path_and_forgeries_are_refused(
    tmp_path: Path, mosquitto: MosquittoProcess, modbus: SimulatorProcess
) -> None:
    async with simulator("acme", "globex") as cloud:
        path = _config(tmp_path, mosquitto, modbus, cloud)
        acme_key = cloud.platform.tenants["acme"].key
        gateway = Gateway(*load(path))
        await gateway.start()
        try:
            # the simulator's own signer (joserfc) and the test's (pyjwt): both verify
            by_platform = cloud.platform.send(
                "acme",
                GATEWAY,
                "point.write",
                {"site": "roof", "device": "inv-01", "point": "power_limit", "value": 80},
            )
            done = await result_of(cloud, "acme", by_platform)
            assert done["status"] == "done" and done["ok"] and done["target"] == "roof/inv-01.power_limit"

            write = claims("acme", "point.write", site="roof", device="inv-03", point="power_limit", value=80)
            token = sign(acme_key, write)
            cloud.platform.enqueue("acme", token)
            assert (await result_of(cloud, "acme", write["jti"]))["status"] == "done"

            cloud.platform.enqueue("acme", token)  # the same message again
            globex_key = cloud.platform.tenants["globex"].key
            stranger = ec.generate_private_key(ec.SECP256R1())
            tampered_claims = _write("acme", "inv-01", 80)
            cloud.platform.enqueue("acme", _tampered(sign(acme_key, tampered_claims)))
            cases = [  # (signing key, claims, expected status, expected reason)
                (acme_key, _write("acme", "inv-01", 70, ttl=-120), "refused", "expired"),
                (stranger, _write("acme", "inv-01", 70), "refused", "signature does not verify"),
                (acme_key, _write("globex", "inv-02", 70), "refused", "for tenant 'globex'"),
                (globex_key, _write("acme", "inv-01", 70), "refused", "signature does not verify"),
                (acme_key, _write("acme", "inv-01", 70, gateway="gw-other"), "refused", "gateway 'gw-other'"),
                (acme_key, _write("acme", "inv-01", 1e9), "refused", "out of range"),
                (
                    acme_key,
                    _write("acme", "inv-02", 50),
                    "refused",
                    "unknown device roof/inv-02 for tenant 'acme'",
                ),
                (acme_key, _write("acme", "inv-dead", 50), "unreachable", "cannot connect"),
                (
                    acme_key,
                    claims("acme", "module.command", module="alarms", action="list"),
                    "refused",
                    "alarms",
                ),
            ]
            expected = {send(cloud, "acme", key, body): (status, why) for key, body, status, why in cases}
            expected[tampered_claims["jti"]] = ("refused", "signature does not verify")
            for jti, (status, reason) in expected.items():
                result = await result_of(cloud, "acme", jti)
                assert result["status"] == status and not result["ok"], result
                assert reason in (result["reason"] or ""), result
            replayed = (await _results(cloud, "acme", write["jti"], 2))[1]
            assert replayed["status"] == "refused" and "replayed" in replayed["reason"]
            assert gateway.stats.devices["inv-03"].up  # the device took the real write
        finally:
            await gateway.stop()

        # a restart does not reopen replays: the ids seen are in SQLite
        gateway = Gateway(*load(path))
        await gateway.start()
        try:
            cloud.platform.enqueue("acme", token)
            again = (await _results(cloud, "acme", write["jti"], 3))[2]
            assert again["status"] == "refused" and "replayed" in again["reason"]
        finally:
            await gateway.stop()
        assert cloud.cross_tenant == 0


@pytest.mark.parametrize(
    "offline",
    [3.0, pytest.param(180.0, marks=[pytest.mark.slow, pytest.mark.timeout(420)], id="minutes")],
)
async def test_commands_queued_while_the_cloud_is_offline_arrive_after_it_returns(
    tmp_path: Path, mosquitto: MosquittoProcess, modbus: SimulatorProcess, offline: float
) -> None:
    async with simulator("acme", "globex") as cloud:
        path = _config(tmp_path, mosquitto, modbus, cloud)
        gateway = Gateway(*load(path))
        await gateway.start()
        try:
            downlink = gateway.downlink
            assert downlink is not None
            await until(lambda: downlink.links["acme"].stats.connected, within=10.0)
            await cloud.set_down(True)
            write = {"site": "roof", "device": "inv-01", "point": "power_limit"}
            queued = [
                cloud.platform.send(
                    "acme", GATEWAY, "point.write", {**write, "value": 60 + i}, ttl=offline + 120
                )
                for i in range(3)
            ]
            await asyncio.sleep(offline)  # offline: the gateway retries with capped backoff
            link = downlink.links["acme"].stats
            assert not link.connected and link.failures >= 2
            if offline > 60:  # capped at 1 s in the test configuration: attempts keep coming
                assert link.failures >= offline / 2
            await cloud.set_down(False)
            results = [await result_of(cloud, "acme", jti, within=20.0) for jti in queued]
            assert [r["status"] for r in results] == ["done"] * 3
            order = [r["id"] for r in cloud.platform.tenants["acme"].results if r["id"] in queued]
            assert order == queued  # in the order the platform queued them
        finally:
            await gateway.stop()
