from __future__ import annotations

import contextlib
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import typer

from edge.cli.common import load_or_exit
from edge.config.edit import replace_if_valid
from edge.config.history import ConfigHistory, history_for, sha
from edge.sdk.errors import ConfigError

CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")

app = typer.Typer(no_args_is_help=True, help="Check and inspect configuration files.")


@app.command("check")
def check(config: Path = typer.Argument(..., help="Gateway configuration file (TOML).")) -> None:
    """Validate a configuration and the profiles it uses; exits 2 and lists every problem if invalid."""
    loaded, _ = load_or_exit(config, module_secrets=True)
    points = sum(len(d.points) for d in loaded.devices)
    typer.echo(
        f"{config}: OK — {len(loaded.config.tenants)} tenant(s), {len(loaded.config.sites)} site(s), "
        f"{len(loaded.devices)} device(s), {points} point(s)"
    )


@app.command("history")
def history(
    config: Path = CONFIG,
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="Versions shown, newest first."),
) -> None:
    """The configuration versions the gateway ran on: at start, from deployments, from rollbacks."""
    with _history(config) as versions:
        rows = versions.versions(limit)
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
