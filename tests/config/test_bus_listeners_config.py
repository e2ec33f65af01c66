"""`[[bus.listeners]]` and the broker's ports as a new user meets them: a refusal names file and field, a port
already taken is one line saying which port, which listener and what to change — never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from tests.e2e import write_config
from tests.helpers import free_port

EDGE = [sys.executable, "-m", "edge.cli"]


@pytest.fixture
def taken() -> Iterator[int]:
    """A port something else listens on (as a system Mosquitto holds 1883)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _config(tmp_path: Path, extra: str = "", port: int | None = None) -> Path:
    path = write_config(tmp_path / "edge.toml", mqtt_port=port or free_port(), modbus_port=free_port(), devices=0, mode="embedded")  # fmt: skip
    path.write_text(path.read_text() + extra)
    return path


def test_anonymous_on_a_lan_listener_is_refused_naming_the_field(tmp_path: Path) -> None:
    config = _config(tmp_path, "[[bus.listeners]]\nport = 18883\nallow_anonymous = true\n")
    result = CliRunner().invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 2
    assert f"{config}: bus.listeners[0].allow_anonymous: " in result.output
    assert "anonymous access is never allowed on a LAN listener" in result.output


def test_the_own_listener_stays_on_loopback(tmp_path: Path) -> None:
    config = _config(tmp_path)
    config.write_text(config.read_text().replace("[bus]\n", '[bus]\nhost = "0.0.0.0"\n'))
    result = CliRunner().invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 2 and "[[bus.listeners]]" in result.output and "'0.0.0.0'" in result.output


def test_two_listeners_on_one_port_and_certificates_without_tls(tmp_path: Path) -> None:
    config = _config(
        tmp_path, "[[bus.listeners]]\nport = 9001\n[[bus.listeners]]\nport = 9001\ntls = false\n"
    )
    assert (
        "port 9001 is used by two listeners"
        in CliRunner().invoke(app, ["config", "check", str(config)]).output
    )
    config = _config(tmp_path, "[[bus.listeners]]\ntls = false\nrequire_certificate = true\n")
    assert "certificates need tls = true" in CliRunner().invoke(app, ["config", "check", str(config)]).output


def test_config_check_names_a_taken_port_and_a_missing_certificate(tmp_path: Path, taken: int) -> None:
    config = _config(tmp_path, f"[[bus.listeners]]\nport = {free_port()}\n", port=taken)
    result = CliRunner().invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    busy = next(line for line in lines if f"port {taken} " in line)
    assert "(own listener on 127.0.0.1) is already in use: set [bus] port to a free port (e.g. " in busy
    missing = next(line for line in lines if "does not exist" in line)
    assert "server.pem" in missing and "edge certs create --profile broker" in missing


def test_edge_run_with_a_taken_port_says_so_in_one_line(tmp_path: Path, taken: int) -> None:
    config = _config(tmp_path, port=taken)
    done = subprocess.run([*EDGE, "run", "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "already in use" in line]
    assert f"port {taken} (own listener on 127.0.0.1) is already in use: set [bus] port" in line


def test_a_lan_listener_port_taken_names_its_field(tmp_path: Path, taken: int) -> None:
    config = _config(tmp_path, f'[[bus.listeners]]\nhost = "127.0.0.1"\nport = {taken}\ntls = false\n')
    result = CliRunner().invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 2
    assert f"port {taken} (mqtt-{taken} listener on 127.0.0.1) is already in use: set bus.listeners[0].port" in result.output  # fmt: skip


def test_init_picks_a_free_bus_port(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", 1883))
            sock.listen()
        except OSError:
            pass  # 1883 is taken already (a system Mosquitto): the case itself
        result = CliRunner().invoke(app, ["init", "-c", str(tmp_path / "edge.toml"), "--id", "gw"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "edge.toml").read_text()
    port = int(text.split("\nport = ")[1].split()[0])
    assert port != 1883 and "1883 was taken on this machine" in text
    assert CliRunner().invoke(app, ["config", "check", str(tmp_path / "edge.toml")]).exit_code == 0


def test_certs_client_profile_needs_a_tenant_user_and_the_ca(tmp_path: Path) -> None:
    runner = CliRunner()
    no_ca = runner.invoke(
        app, ["certs", "create", "--profile", "client", "--user", "bms@acme", "--out", str(tmp_path)]
    )
    assert no_ca.exit_code == 2 and "--profile broker" in no_ca.output
    assert (
        runner.invoke(app, ["certs", "create", "--profile", "broker", "--out", str(tmp_path)]).exit_code == 0
    )
    no_user = runner.invoke(
        app, ["certs", "create", "--profile", "client", "--user", "bms", "--out", str(tmp_path)]
    )
    assert no_user.exit_code == 2 and "name@tenant" in no_user.output
    again = runner.invoke(app, ["certs", "create", "--profile", "broker", "--out", str(tmp_path)])
    assert again.exit_code == 1 and "--force" in again.output
    assert (tmp_path / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "server.key").stat().st_mode & 0o777 == 0o600
