"""Helpers shared by the CLI commands: logging set-up, loading the configuration with readable errors."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from edge.config import LoadedConfig, load_config
from edge.errors import ConfigError
from edge.logs import LogFormat, configure
from edge.plugins import PluginRegistry

EXIT_CONFIG = 2


def setup_logging(level: str = "INFO", fmt: LogFormat = "text") -> None:
    configure(
        level, fmt
    )  # edge.logs: tenant and device bound, secrets redacted    # pymodbus logs every failed request with a frame dump; the gateway logs device down/up once instead.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per upload otherwise


def load_or_exit(path: Path) -> tuple[LoadedConfig, PluginRegistry]:
    registry = PluginRegistry.from_entry_points()
    try:
        return load_config(path, registry), registry
    except ConfigError as exc:
        typer.echo(f"configuration is invalid ({len(exc.issues)} problem(s)):", err=True)
        for issue in exc.issues:
            typer.echo(f"  {issue}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
