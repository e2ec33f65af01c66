"""Helpers shared by the CLI commands: logging set-up, loading the configuration with readable errors."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import typer

from edge.config import LoadedConfig, load_config
from edge.config.secrets import check_module_references
from edge.ops.logs import LogFormat, configure
from edge.plugins import PluginRegistry
from edge.sdk.errors import ConfigError, ConfigIssue

EXIT_CONFIG = 2


def setup_logging(level: str = "INFO", fmt: LogFormat = "text") -> None:
    configure(
        level, fmt
    )  # edge.ops.logs: tenant and device bound, secrets redacted    # pymodbus logs every failed request with a frame dump; the gateway logs device down/up once instead.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per upload otherwise


def load_or_exit(
    path: Path, *, module_secrets: bool = False, secrets: bool = True
) -> tuple[LoadedConfig, PluginRegistry]:
    """Load or exit 2 listing every problem; `module_secrets`: also resolve the modules' secret references
    (for commands that start or validate modules); `secrets=False`: leave every reference unresolved (for
    commands that connect to nothing)."""
    registry = PluginRegistry.from_entry_points()
    issues: list[ConfigIssue] = []
    try:
        loaded = load_config(path, registry, resolve_secrets=secrets)
    except ConfigError as exc:
        issues = exc.issues
    if module_secrets and path.is_file():
        issues += module_secret_issues(path)
    if issues:
        typer.echo(f"configuration is invalid ({len(issues)} problem(s)):", err=True)
        for issue in issues:
            typer.echo(f"  {issue}", err=True)
        raise typer.Exit(EXIT_CONFIG)
    return loaded, registry


def module_secret_issues(path: Path) -> list[ConfigIssue]:
    """Problems with the modules' secret references (edge.config.secrets); resolving registers them for redaction."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return []  # load_config reports those
    return check_module_references(raw, path)
