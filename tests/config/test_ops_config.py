"""Secret references (`env:` / `file:`), configuration format versions and deprecated keys."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.config.secrets import known_secrets
from edge.config.versions import Deprecation, upgrade
from edge.sdk.errors import ConfigError
from tests.e2e import load

BASE = """
[gateway]
id = "gw"
[[tenants]]
id = "acme"
[[sites]]
id = "roof"
"""


def _write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(BASE + extra)
    return path


def test_bus_password_from_a_private_file_and_username_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "secrets" / "mqtt.password"
    secret.parent.mkdir()
    secret.write_text("s3cret-from-file\n")
    secret.chmod(0o600)
    monkeypatch.setenv("EDGE_TEST_MQTT_USER", "gateway-user")
    loaded, _ = load(
        _write(
            tmp_path, '[bus]\nusername = "env:EDGE_TEST_MQTT_USER"\npassword = "file:secrets/mqtt.password"\n'
        )
    )
    assert loaded.config.bus.password == "s3cret-from-file"
    assert loaded.config.bus.username == "gateway-user"
    assert "s3cret-from-file" in known_secrets()


def test_unresolvable_references_name_the_file_the_field_and_the_reference(tmp_path: Path) -> None:
    loose = tmp_path / "loose.secret"
    loose.write_text("x" * 10)
    loose.chmod(0o644)
    path = _write(
        tmp_path,
        '[bus]\nusername = "env:EDGE_TEST_NOT_SET_ANYWHERE"\npassword = "file:loose.secret"\n'
        '[[modules]]\nname = "cloud_sync"\nconfig = { tenants = { acme = { client_secret = "file:/nonexistent/x" } } }\n',
    )
    with pytest.raises(ConfigError) as err:
        load(path)
    text = [str(i) for i in err.value.issues]
    assert not any("modules[0]" in t for t in text)  # loading needs no module secret (edge sync, status...)
    checked = CliRunner().invoke(app, ["config", "check", str(path)])
    assert checked.exit_code == 2
    text = [line.strip() for line in checked.output.splitlines()]
    assert any(
        t.startswith(f"{path}: bus.username:") and "EDGE_TEST_NOT_SET_ANYWHERE is not set" in t for t in text
    )
    assert any("bus.password" in t and "readable by others (mode 644)" in t for t in text)
    assert any("modules[0] (cloud_sync).config.tenants.acme.client_secret" in t for t in text)
    assert "x" * 10 not in "".join(text)


def test_a_file_for_a_newer_format_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text("config_version = 99\n" + BASE)
    with pytest.raises(ConfigError) as err:
        load(path)
    (issue,) = err.value.issues
    assert issue.location == "config_version" and "upgrade the gateway" in issue.reason


def test_a_file_without_config_version_is_the_first_format_and_loads(tmp_path: Path) -> None:
    loaded, _ = load(_write(tmp_path, ""))
    assert loaded.config.gateway.id == "gw"
    path = tmp_path / "v1.toml"
    path.write_text("config_version = 1\n" + BASE)
    assert load(path)[0].config.gateway.id == "gw"


def test_older_formats_are_migrated_step_by_step_and_too_old_ones_refused() -> None:
    def v1_to_v2(raw: dict) -> dict:
        raw = dict(raw)
        raw["bus"] = {"port": raw.pop("mqtt_port")}
        return raw

    def v2_to_v3(raw: dict) -> dict:
        return {**raw, "storage": {"path": "migrated.db"}}

    migrated, issues = upgrade(
        {"config_version": 1, "mqtt_port": 1884}, "f.toml", migrations={1: v1_to_v2, 2: v2_to_v3}, current=3
    )
    assert issues == [] and migrated == {"bus": {"port": 1884}, "storage": {"path": "migrated.db"}}
    _, issues = upgrade({"config_version": 1}, "f.toml", migrations={}, current=3, oldest=2)
    assert "too old" in issues[0].reason and "intermediate release" in issues[0].reason


def test_a_deprecated_key_warns_and_moves_for_two_minor_releases_then_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dep = Deprecation(("bus", "broker_port"), ("bus", "port"), deprecated_in="0.2.0", removed_in="0.4.0")
    raw = {"bus": {"broker_port": 1884}}
    with caplog.at_level(logging.WARNING):
        migrated, issues = upgrade(raw, "f.toml", deprecations=[dep], release="0.3.5")
    assert issues == [] and migrated == {"bus": {"port": 1884}}
    assert raw == {"bus": {"broker_port": 1884}}  # the caller's mapping is untouched
    assert "bus.broker_port is deprecated since 0.2.0; use bus.port" in caplog.text
    assert "refused from 0.4.0" in caplog.text
    _, issues = upgrade(raw, "f.toml", deprecations=[dep], release="0.4.0")
    assert issues[0].location == "bus.broker_port" and "removed in 0.4.0" in issues[0].reason


def test_commands_that_connect_to_nothing_work_without_the_services_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, '[bus]\npassword = "env:EDGE_TEST_ONLY_IN_THE_SERVICE"\n')
    assert CliRunner().invoke(app, ["config", "check", str(path)]).exit_code == 2
    status = CliRunner().invoke(app, ["status", "-c", str(path)])
    assert status.exit_code == 4 and "not live" in status.output  # not "configuration is invalid"
