"""Rotating a platform's signing key on a running gateway (no restart), against the cloud simulator, with the
test signing as the platform through pyjwt (independent of the gateway's joserfc).

acme's keys are a directory (`verify_key = "keys/acme"`): the new key is added beside the old one for the
rotation window, then the old one is removed. globex's key is one file, replaced in place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from edge.gateway import Gateway
from simulators.cloud import CloudSimulator
from tests.cloud_harness import simulator
from tests.downlink_harness import add_cloud, claims, public_pem, result_of, send
from tests.e2e import load, write_config
from tests.helpers import MosquittoProcess, SimulatorProcess

pytestmark = pytest.mark.timeout(90)


def _write(tenant: str, device: str, value: float) -> dict[str, Any]:
    return claims(tenant, "point.write", site="roof", device=device, point="power_limit", value=value)


async def _outcome(
    cloud: CloudSimulator, tenant: str, key: ec.EllipticCurvePrivateKey, device: str, value: float
) -> str:
    """Send a write signed with `key`; the result's status, and the reason of a refusal."""
    result = await result_of(cloud, tenant, send(cloud, tenant, key, _write(tenant, device, value)))
    return str(result["status"]) if result["ok"] else f"{result['status']}: {result['reason']}"


def _replace(path: Path, pem: bytes) -> None:
    """As an operator's deployment tool does: write beside, then rename over (readers never see half)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(pem)
    os.replace(tmp, path)


async def test_a_platform_key_is_rotated_without_a_restart_and_both_verify_during_the_window(
    tmp_path: Path, mosquitto: MosquittoProcess, modbus: SimulatorProcess
) -> None:
    async with simulator("acme", "globex") as cloud:
        path = write_config(
            tmp_path / "edge.toml", mqtt_port=mosquitto.port, modbus_port=modbus.port, devices=2
        )
        ring = tmp_path / "keys" / "acme"
        ring.mkdir(parents=True)
        old = {t: cloud.platform.tenants[t].key for t in ("acme", "globex")}
        (ring / "2026-old.pem").write_bytes(public_pem(old["acme"]))
        per_tenant = {
            "acme": {"verify_key": "keys/acme", "entitlements": False},
            "globex": {"entitlements": False},
        }
        add_cloud(path, cloud, ("acme", "globex"), per_tenant=per_tenant)
        new = {t: ec.generate_private_key(ec.SECP256R1()) for t in ("acme", "globex")}
        gateway = Gateway(*load(path))
        await gateway.start()
        try:
            assert await _outcome(cloud, "acme", old["acme"], "inv-01", 61) == "done"
            refused = await _outcome(cloud, "acme", new["acme"], "inv-01", 62)
            assert refused.startswith("refused: signature does not verify with tenant acme's key")

            (ring / "2027-new.pem").write_bytes(public_pem(new["acme"]))  # the rotation window opens
            assert await _outcome(cloud, "acme", new["acme"], "inv-01", 63) == "done"
            assert await _outcome(cloud, "acme", old["acme"], "inv-01", 64) == "done"  # still in the ring

            (ring / "2026-old.pem").unlink()  # the window closes: the old key no longer signs
            refused = await _outcome(cloud, "acme", old["acme"], "inv-01", 65)
            assert refused.startswith("refused: signature does not verify")
            assert await _outcome(cloud, "acme", new["acme"], "inv-01", 66) == "done"

            globex_file = tmp_path / "keys" / "globex.pem"
            assert await _outcome(cloud, "globex", old["globex"], "inv-02", 71) == "done"
            _replace(globex_file, public_pem(new["globex"]))  # the one key file, replaced in place
            assert await _outcome(cloud, "globex", new["globex"], "inv-02", 72) == "done"
            refused = await _outcome(cloud, "globex", old["globex"], "inv-02", 73)
            assert refused.startswith("refused: signature does not verify with tenant globex's key")
            assert gateway.stats.devices["inv-01"].up and gateway.stats.devices["inv-02"].up
        finally:
            await gateway.stop()
        assert cloud.cross_tenant == 0
