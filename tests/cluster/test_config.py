"""The [cluster] section: refused combinations name the field and the reason; instances get their own dirs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge.config import load_config
from edge.plugins import PluginRegistry
from edge.sdk.errors import ConfigError
from tests.e2e import write_config

REGISTRY = PluginRegistry.from_entry_points()


def _config(tmp_path: Path, cluster: str, *, bus: str = "external", extra: str = "") -> Path:
    path = write_config(tmp_path / "edge.toml", mqtt_port=1883, modbus_port=5020, devices=2, mode=bus)
    path.write_text(path.read_text() + extra + "[cluster]\nenabled = true\n" + cluster)
    return path


def _problem(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, REGISTRY, resolve_secrets=False)
    return "\n".join(str(issue) for issue in caught.value.issues)


@pytest.mark.parametrize(
    ("cluster", "bus", "extra", "expected"),
    [
        ('dsn = "postgresql://edge@db/edge"\n', "embedded", "", 'mode = "external"'),
        ("", "external", "", "cluster mode needs PostgreSQL"),
        (
            'dsn = "postgresql://e@db/e"\nlease_ttl = 5\nrenew_deadline = 5\n',
            "external",
            "",
            "before its leases",
        ),
        (
            'dsn = "postgresql://e@db/e"\nlease_ttl = 5\nrenew_deadline = 4.5\n',
            "external",
            "",
            "at least 1 s",
        ),
        (
            'dsn = "postgresql://e@db/e"\n',
            "external",
            '[storage]\nbackend = "postgresql"\n[storage.postgresql]\ndsn = "postgresql://e@db/e"\n',
            "leave [cluster] dsn unset",
        ),
    ],
)
def test_refused_combinations_say_why(
    tmp_path: Path, cluster: str, bus: str, extra: str, expected: str
) -> None:
    path = _config(tmp_path, cluster, bus=bus, extra=extra)
    if extra:  # its [storage] replaces the file's own
        path.write_text(path.read_text().replace("[storage]\ncommit_interval_ms = 5\n", "", 1))
    assert expected in _problem(path)


def test_sparkplug_is_refused_in_cluster_mode(tmp_path: Path) -> None:
    path = _config(tmp_path, 'dsn = "postgresql://e@db/e"\n')
    path.write_text(
        path.read_text().replace(
            'entitlements = ["solar"]\n', 'entitlements = ["solar"]\n[tenants.sparkplug]\n', 1
        )
    )
    assert "not available in cluster mode" in _problem(path)


def test_each_instance_has_its_own_data_directory(tmp_path: Path) -> None:
    loaded = load_config(_config(tmp_path, 'dsn = "postgresql://e@db/e"\n'), REGISTRY, resolve_secrets=False)
    assert loaded.config.cluster_database() == ("postgresql://e@db/e", None)
    assert dataclasses.replace(loaded, instance="b").data_dir == loaded.data_dir / "instances" / "b"
