"""ThingsBoard IoT Gateway as the benchmark's peer, end to end against a real Mosquitto and bank simulator.

Slow: the first run pip-installs thingsboard-gateway into its own venv (cached afterwards, see
`bench.peer_thingsboard.default_venv_dir`), and each case runs TB for about 15 s.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.peer_common import bank_simulator, local_broker
from bench.peer_thingsboard import (
    TB_VERSION,
    default_venv_dir,
    ensure_thingsboard_installed,
    run_thingsboard,
)
from tests.bench.peer_checks import assert_delivered_and_measured

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),  # the first case may install TB
    pytest.mark.skipif(
        shutil.which("mosquitto", path="/usr/sbin:/usr/bin") is None, reason="needs mosquitto"
    ),
]

DEVICES, REGISTERS, POLL = 3, 10, 0.5
OFFERED = DEVICES * REGISTERS / POLL


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_thingsboard_delivers_every_point_with_one_connection_per_device(
    tmp_path: Path, storage: str
) -> None:
    with (
        local_broker(tmp_path / "broker") as broker_port,
        bank_simulator(DEVICES, REGISTERS, tmp_path / "sim") as devices,
    ):
        assert len({port for _host, port, _unit in devices}) == 1  # all three share one simulator port
        result = run_thingsboard(
            workdir=tmp_path / "tb",
            broker_port=broker_port,
            devices=devices,
            registers=REGISTERS,
            poll_interval=POLL,
            duration=6.0,
            storage=storage,  # type: ignore[arg-type]
            warmup=2.0,
        )

    assert result.name == f"thingsboard-gateway {TB_VERSION} ({storage} storage)"
    assert_delivered_and_measured(result, OFFERED)
    # TB keys connections by host string: the aliases give each device its own connection
    assert f"{DEVICES} Modbus TCP connections open" in result.notes
    assert "(0 errors)" in result.notes
    if storage == "sqlite":
        assert list((tmp_path / "tb" / "tb_storage").glob("*.db"))


def test_devices_on_one_port_share_a_connection_when_asked(tmp_path: Path) -> None:
    with (
        local_broker(tmp_path / "broker") as broker_port,
        bank_simulator(DEVICES, REGISTERS, tmp_path / "sim") as devices,
    ):
        result = run_thingsboard(
            workdir=tmp_path / "tb",
            broker_port=broker_port,
            devices=devices,
            registers=REGISTERS,
            poll_interval=POLL,
            duration=4.0,
            storage="memory",
            warmup=2.0,
            share_connections=True,
        )
    assert "1 Modbus TCP connections open" in result.notes
    assert 0.8 * OFFERED <= result.delivered_points_per_s <= 1.2 * OFFERED


def test_install_is_cached() -> None:
    python = ensure_thingsboard_installed(default_venv_dir())
    assert python == ensure_thingsboard_installed(default_venv_dir())
    assert python.is_relative_to(default_venv_dir().absolute())
