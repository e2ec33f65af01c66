"""The `edge` command: a thin typer face over the kernel's API, one sub-app per command group. Plug-ins add
their own command groups through the `edge.cli` entry points (edge.cli.plugin_commands, edge.sdk.cli).

`app`, the whole tree, is built on first use (edge.cli.tree). `edge run` builds only its own command: the
gateway's process then never loads the other groups and the plug-ins' commands (~7 MB of RSS kept for as long
as it runs: their libraries, OAuth and JOSE among them; docs/performance.md, "Memory.")."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

    app: typer.Typer

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from edge.cli.tree import app

        return app
    raise AttributeError(f"module 'edge.cli' has no attribute {name!r}")


def main() -> None:
    # Everything `edge` writes (outbox with webhook secrets, keys, broker users, status) is the gateway's
    # alone, whatever the calling shell's umask; the kernel creates the data directory 0700 besides.
    os.umask(0o077)
    command = _run_only() if sys.argv[1:2] == ["run"] else __getattr__("app")
    command(
        prog_name="edge"
    )  # also under `python -m edge.cli`: help, and completion's _EDGE_COMPLETE, say `edge`


def _run_only() -> typer.Typer:
    """The root group holding `run` alone: the same options, help and exit codes as in the full tree."""
    from edge.cli import run_cmd
    from edge.cli.root import root_app

    app = root_app()
    app.command("run")(run_cmd.run)
    return app
