from __future__ import annotations

import contextlib
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import typer

from edge.bus.broker import running_broker
from edge.bus.listeners import broker_listeners, certificate_problems, port_problems
from edge.cli.common import EXIT_CONFIG, load_or_exit
from edge.cli.output import JSON_OPTION, emit_json
from edge.config import LoadedConfig
from edge.config.edit import replace_if_valid
from edge.config.history import ConfigHistory, history_for, sha
from edge.sdk.errors import ConfigError

CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")

app = typer.Typer(no_args_is_help=True, help="Check and inspect configuration files.")


@app.command("check")
def check(config: Path = typer.Argument(..., help="Gateway configuration file (TOML).")) -> None:
    """Validate a configuration and the profiles it uses; exits 2 and lists every problem if invalid."""
    loaded, _ = load_or_exit(config, module_secrets=True)
    problems = broker_problems(loaded)
    if problems:
        typer.echo(f"{config}: the embedded broker could not start ({len(problems)} problem(s)):", err=True)
        for problem in problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(EXIT_CONFIG)
    points = sum(len(d.points) for d in loaded.devices)
    typer.echo(
        f"{config}: OK — {len(loaded.config.tenants)} tenant(s), {len(loaded.config.sites)} site(s), "
        f"{len(loaded.devices)} device(s), {points} point(s)"
    )


def broker_problems(loaded: LoadedConfig) -> list[str]:
    """Missing certificate files and ports already taken (unless this gateway's own broker holds them)."""
    bus = loaded.config.bus
    if bus.mode != "embedded":
        return []
    listeners = broker_listeners(bus, loaded.path.parent, loaded.data_dir)
    problems = certificate_problems(listeners)
    try:
        running = running_broker(loaded.data_dir / "broker") is not None
    except PermissionError:  # it runs as the broker's account, which this user may not inspect
        running = True
    if not running:
        problems += port_problems(listeners)
    return problems


@app.command("history")
def history(
    config: Path = CONFIG,
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="Versions shown, newest first."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The configuration versions the gateway ran on: at start, from deployments, from rollbacks."""
    with _history(config) as versions:
        rows = versions.versions(limit)
    if as_json:
        now = sha(config.read_text())
        fields = ("n", "at", "source", "label", "status", "reason", "sha")
        emit_json([{**{f: getattr(v, f) for f in fields}, "current": v.sha == now} for v in rows])
        return
    if not rows:
        typer.echo(f"no versions recorded yet for {config} (the gateway records one when it starts)")
        return
    current = sha(config.read_text())
    typer.echo(f"{'N':>4}  {'WHEN (UTC)':<19}  {'SOURCE':<10}  {'LABEL':<16}  {'STATUS':<11}  SHA256")
    for v in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.at))
        mark = "  <- the file now" if v.sha == current else ""
        typer.echo(
            f"{v.n:>4}  {when:<19}  {v.source:<10}  {v.label or '-':<16}  {v.status:<11}  {v.sha[:12]}{mark}"
        )
        if v.reason:
            typer.echo(f"{'':>6}{v.reason}")


@app.command("rollback")
def rollback(
    version: int = typer.Argument(..., help="The version number `edge config history` shows."),
    config: Path = CONFIG,
) -> None:
    """Put a recorded version back in the file (validated first; comments as they were in it). A running
    gateway applies its entitlements at once; device changes apply at its next start."""
    with _history(config) as versions:
        chosen = versions.version(version)
        if chosen is None:
            typer.echo(f"no version {version} (see `edge config history -c {config}`)", err=True)
            raise typer.Exit(1)
        try:
            replace_if_valid(config, chosen.text)
        except ConfigError as exc:
            typer.echo(f"version {version} is not valid here any more:\n{exc}", err=True)
            raise typer.Exit(2) from None
        versions.record(chosen.text, source="rollback", label=f"v{version}")
    typer.echo(f"{config}: restored version {version} ({chosen.sha[:12]})")


@contextlib.contextmanager
def _history(config: Path) -> Iterator[ConfigHistory]:
    try:
        versions = history_for(config)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        typer.echo(f"cannot read {config}: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        yield versions
    finally:
        versions.close()
