"""`edge service install/uninstall` into a temporary root: layout, hardened unit checked by systemd itself."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.config import load_config
from edge.plugins import PluginRegistry

ANALYZE = shutil.which("systemd-analyze")


def _install(root: Path, *extra: str) -> str:
    result = CliRunner().invoke(app, ["service", "install", "--root", str(root), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_install_lays_out_unit_user_directories_and_a_starter_config(tmp_path: Path) -> None:
    output = _install(tmp_path, "--id", "plant-7")
    unit = (tmp_path / "etc/systemd/system/edge-gateway.service").read_text()
    for directive in (
        "Type=notify",
        "WatchdogSec=30",
        "Restart=on-failure",
        "StartLimitBurst=5",
        "User=edge-gateway",
        "SupplementaryGroups=dialout",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/edge-gateway",
        "DeviceAllow=char-ttyUSB rw",
        "--config /etc/edge-gateway/edge.toml --log-format kv",
    ):
        assert directive in unit
    sysusers = (tmp_path / "etc/sysusers.d/edge-gateway.conf").read_text()
    assert 'u edge-gateway - "Edge gateway" /var/lib/edge-gateway' in sysusers
    assert "m edge-gateway dialout" in sysusers
    assert (
        "d /var/lib/edge-gateway 0700 edge-gateway edge-gateway"
        in (tmp_path / "etc/tmpfiles.d/edge-gateway.conf").read_text()
    )
    assert "to run   systemd-sysusers" in output  # into a root: nothing runs on this machine

    config = tmp_path / "etc/edge-gateway/edge.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert 'data_dir = "/var/lib/edge-gateway"' in config.read_text()
    key = tmp_path / "var/lib/edge-gateway/identity/private_key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "var/lib/edge-gateway").stat().st_mode) == 0o700
    assert "StateDirectoryMode=0700" in unit
    loaded = load_config(config, PluginRegistry.from_entry_points())
    assert loaded.config.gateway.id == "plant-7" and loaded.data_dir == Path("/var/lib/edge-gateway")

    config.write_text(config.read_text().replace('name = ""', 'name = "Plant room 7"', 1))
    assert f"kept     {config}" in _install(tmp_path)  # an upgrade re-installs the unit, keeps the config
    assert 'name = "Plant room 7"' in config.read_text()


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd)")
def test_systemd_accepts_the_unit_and_rates_it_well_hardened(tmp_path: Path) -> None:
    _install(tmp_path)
    unit = tmp_path / "etc/systemd/system/edge-gateway.service"
    verify = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stderr  # no warning at all
    security = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60
    )
    exposure = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout).group(1))  # type: ignore[union-attr]
    assert exposure <= 2.0, security.stdout  # systemd's scale: 0 safest .. 10 unprotected


def test_uninstall_keeps_configuration_and_data_unless_purged(tmp_path: Path) -> None:
    _install(tmp_path)
    result = CliRunner().invoke(app, ["service", "uninstall", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "etc/systemd/system/edge-gateway.service").exists()
    assert not (tmp_path / "etc/sysusers.d/edge-gateway.conf").exists()
    assert (tmp_path / "etc/edge-gateway/edge.toml").exists()
    assert (tmp_path / "var/lib/edge-gateway/identity/private_key.pem").exists()

    refused = CliRunner().invoke(
        app, ["service", "uninstall", "--root", str(tmp_path), "--purge"], input="n\n"
    )
    assert refused.exit_code == 1 and (tmp_path / "var/lib/edge-gateway").exists()
    purged = CliRunner().invoke(
        app, ["service", "uninstall", "--root", str(tmp_path), "--purge"], input="y\n"
    )
    assert purged.exit_code == 0, purged.output
    assert not (tmp_path / "etc/edge-gateway").exists() and not (tmp_path / "var/lib/edge-gateway").exists()
