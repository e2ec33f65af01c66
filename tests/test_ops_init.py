"""`edge init` -> `edge config check` -> `edge run` on what it wrote, with private identity and secrets."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from edge.certs import application_uri, load_certificate
from tests.helpers import free_port

EDGE = [sys.executable, "-m", "edge.cli"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_then_check_then_run_serves_with_an_embedded_broker(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "edge.toml"
    out = subprocess.run(
        [*EDGE, "init", "-c", str(config), "--id", "plant-1", "--tenant", "acme"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
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

    again = subprocess.run([*EDGE, "init", "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "refusing to replace" in again.stderr
    key = (identity / "private_key.pem").read_bytes()
    forced = subprocess.run(
        [*EDGE, "init", "-c", str(config), "--id", "plant-1", "--force"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert forced.returncode == 0 and "kept the existing one" in forced.stdout
    assert (
        identity / "private_key.pem"
    ).read_bytes() == key  # --force rewrites the config, never the identity

    check = subprocess.run(
        [*EDGE, "config", "check", str(config)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0 and "OK" in check.stdout, check.stderr

    port = free_port()
    config.write_text(config.read_text().replace("port = 1883", f"port = {port}"))
    gateway = subprocess.Popen([*EDGE, "run", "-c", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            status = subprocess.run([*EDGE, "status", "-c", str(config)], capture_output=True, text=True)
            if status.returncode == 0:
                break
            assert time.monotonic() < deadline and gateway.poll() is None, status.stdout
            time.sleep(0.3)
        gateway.send_signal(signal.SIGTERM)
        _, stderr = gateway.communicate(timeout=30)
    finally:
        if gateway.poll() is None:
            gateway.kill()
    assert gateway.returncode == 0, stderr
    assert "gateway plant-1 started" in stderr
