"""The root `edge` group without its commands: what the full command tree (edge.cli.app) and the gateway's own
`edge run` (edge.cli.main) both start from."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import typer

from edge.sdk.version import KERNEL_API_VERSION

__all__ = ["root_app"]

_HELP = "Edge gateway for buildings and industrial sites."


def _show_version(asked: bool) -> None:
    if asked:
        typer.echo(f"edge {version('edge-gateway')} (kernel API {KERNEL_API_VERSION})")
        raise typer.Exit()


def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Edge gateway for buildings and industrial sites."""


def root_app(**options: Any) -> typer.Typer:
    """A root group with `--version` and no command yet (typer's --install-completion / --show-completion:
    shell completion of commands, options and plug-ins)."""
    app = typer.Typer(no_args_is_help=True, help=_HELP, **options)
    app.callback()(_root)
    return app
