"""Plug-ins bring their own `edge` commands through the `edge.cli` entry points; the kernel's CLI names none."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from edge.cli.plugin_commands import CLI_GROUP
from edge.sdk.cli import open_gateway_config
from tests.e2e import write_config

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_PACKAGES = {"drivers", "modules", "cloud_sync"}


def _plugin_references(source: str, command_names: set[str]) -> list[str]:
    """Imports of a plug-in package, and plug-in command names written as strings, in one file."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in PLUGIN_PACKAGES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in PLUGIN_PACKAGES:
                found.append(node.module)
        elif isinstance(node, ast.Constant) and node.value in command_names:
            found.append(repr(node.value))
    return found


def test_the_kernels_cli_names_no_plugin() -> None:
    names = {ep.name for ep in entry_points(group=CLI_GROUP)}
    assert names >= {"alarm", "billing", "sync"}
    found = {
        str(path.relative_to(ROOT)): refs
        for path in sorted((ROOT / "edge" / "cli").rglob("*.py"))
        if (refs := _plugin_references(path.read_text(), names))
    }
    assert found == {}
    planted = 'from modules import billing\nimport cloud_sync.cli\napp.add_typer(x, name="sync")\n'
    assert _plugin_references(planted, names) == ["modules", "cloud_sync.cli", "'sync'"]


def _edge(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        cwd=site,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _distribution(site: Path, name: str, entry_points_txt: str) -> None:
    """An installed distribution as importlib.metadata finds it: a dist-info folder on the path."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points_txt)


def test_a_broken_plugin_cli_is_reported_in_one_line_and_the_others_keep_working(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _distribution(site, "acme_tools", "[edge.cli]\nhello = acme_tools:app\nrun = acme_tools:app\n")
    _distribution(site, "broken_tools", "[edge.cli]\nbroken = broken_tools:app\n")
    (site / "acme_tools.py").write_text(
        "import typer\n\napp = typer.Typer(help='Tools of ACME.')\n\n\n"
        "@app.command('greet')\ndef greet(name: str) -> None:\n    typer.echo(f'hello {name}')\n"
    )
    (site / "broken_tools.py").write_text("import a_dependency_that_is_not_installed\n")

    listing = _edge(site, "--help")
    assert listing.returncode == 0, listing.stderr
    problems = listing.stderr.splitlines()
    assert len(problems) == 2, problems
    broken = next(line for line in problems if "'broken'" in line)
    assert "broken_tools:app from broken_tools" in broken
    assert "ModuleNotFoundError" in broken and "a_dependency_that_is_not_installed" in broken
    shadow = next(line for line in problems if "'run'" in line)
    assert "acme_tools:app from acme_tools" in shadow and "command of the kernel" in shadow
    for command in ("run", "alarm", "billing", "sync", "hello"):
        assert f" {command} " in listing.stdout
    assert " broken " not in listing.stdout

    greeted = _edge(site, "hello", "greet", "world")
    assert (greeted.returncode, greeted.stdout) == (0, "hello world\n")
    assert "Run the gateway" in _edge(site, "run", "--help").stdout  # still the kernel's run
    sync = _edge(site, "sync", "status", "-c", str(tmp_path / "missing.toml"))
    assert sync.returncode == 2 and "file not found" in sync.stderr


def test_a_plugin_cli_imported_before_the_kernels_cli_is_still_mounted() -> None:
    code = (
        "import cloud_sync.cli\n"
        "from typer.testing import CliRunner\n"
        "from edge.cli import app\n"
        "print(CliRunner().invoke(app, ['sync', '--help']).output)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "replay-dead-letters" in out.stdout and out.stderr == ""


def test_a_plugin_command_sees_the_gateways_configuration(tmp_path: Path) -> None:
    path = write_config(tmp_path / "edge.toml", mqtt_port=1883, modbus_port=502, devices=1)
    with path.open("a") as fh:
        fh.write('[[modules]]\nname = "solar"\n[modules.config]\ninterval = 60.0\n')
        fh.write('[[modules]]\nname = "billing"\nenabled = false\n')
    gateway = open_gateway_config(path)
    assert list(gateway.tenants) == ["acme", "globex"]
    assert gateway.tenants["acme"].entitlements == frozenset({"solar"})
    assert gateway.outbox_path.parent == gateway.data_dir == tmp_path / "data"
    assert gateway.status_file.parent == gateway.data_dir
    assert gateway.module_config("solar") == {"interval": 60.0}
    assert gateway.module_config("billing") is None  # disabled
    assert gateway.module_config("alarms") is None  # not configured
