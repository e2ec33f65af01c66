"""`edge init` -> `edge config check` -> `edge run` on what it wrote, with private identity and secrets."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from edge.cli import app
from edge.sdk.certs import application_uri, load_certificate
from tests.helpers import free_port

EDGE = [sys.executable, "-m", "edge.cli"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_then_check_then_run_serves_with_an_embedded_broker(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "edge.toml"
    out = CliRunner().invoke(app, ["init", "-c", str(config), "--id", "plant-1", "--tenant", "acme"])
    assert out.exit_code == 0, out.output
    identity = tmp_path / "etc" / "var" / "identity"
    secrets = tmp_path / "etc" / "secrets"
    assert _mode(identity / "private_key.pem") == 0o600 and _mode(identity) == 0o700
    assert _mode(secrets) == 0o700
    assert _mode(secrets / "mqtt.password") == 0o600 and _mode(secrets / "webhook.secret") == 0o600
    assert (secrets / "webhook.secret").read_text().startswith("whsec_")
    assert application_uri(load_certificate(identity / "certificate.der")) == "urn:edge-gateway:plant-1"
    text = config.read_text()
    assert (
        'password = "file:secrets/mqtt.password"' in text
        and (secrets / "mqtt.password").read_text()[:-1] not in text
    )
    assert text.count("\n#") > 10  # commented for the person who edits it
    # the trial of 2026-12-07 logged in to the embedded broker with these and was refused: they say what for
    assert "# username and password: the gateway's login at an external broker only." in text

    again = CliRunner().invoke(app, ["init", "-c", str(config)])
    assert again.exit_code == 1 and "refusing to replace" in again.output
    key = (identity / "private_key.pem").read_bytes()
    forced = CliRunner().invoke(app, ["init", "-c", str(config), "--id", "plant-1", "--force"])
    assert forced.exit_code == 0 and "kept the existing one" in forced.output
    assert (
        identity / "private_key.pem"
    ).read_bytes() == key  # --force rewrites the config, never the identity

    check = CliRunner().invoke(app, ["config", "check", str(config)])
    assert check.exit_code == 0 and "OK" in check.output, check.output

    port = free_port()
    config.write_text(config.read_text().replace("port = 1883", f"port = {port}"))
    gateway = subprocess.Popen([*EDGE, "run", "-c", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            status = CliRunner().invoke(app, ["status", "-c", str(config)])
            if status.exit_code == 0:
                break
            assert time.monotonic() < deadline and gateway.poll() is None, status.output
            time.sleep(0.3)
        gateway.send_signal(signal.SIGTERM)
        _, stderr = gateway.communicate(timeout=30)
    finally:
        if gateway.poll() is None:
            gateway.kill()
    assert gateway.returncode == 0, stderr
    assert "gateway plant-1 started" in stderr
