"""Commands that plug-ins bring to `edge`, found through the `edge.cli` entry-point group.

Each entry point names a typer app; its name is the command the app is mounted under
(`billing = "modules.billing.cli:app"` gives `edge billing ...`). The kernel's CLI names no plug-in: the root
group mounts what is installed when it is built for a command line, after the kernel's own commands, so a
plug-in's CLI may import `edge.sdk.cli` (and through it this package) in any order. A plug-in whose CLI fails
to load, or whose command name is taken, is reported in one line on stderr; the other commands keep working.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

CLI_GROUP = "edge.cli"


class PluginCommands(TyperGroup):
    """The root `edge` group: the kernel's commands, then each installed plug-in's (by command name)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for problem in self._mount(entry_points(group=CLI_GROUP)):
            typer.echo(f"edge: {problem}", err=True)

    def _mount(self, plugins: Iterable[EntryPoint]) -> list[str]:
        """Mount each entry point's typer app under the entry point's name; one line per plug-in that is not
        mounted."""
        kernel = set(self.commands)
        problems: list[str] = []
        for ep in sorted(plugins, key=lambda ep: ep.name):
            if ep.name in kernel:
                problem = "ignored: it is a command of the kernel"
            elif ep.name in self.commands:
                problem = "ignored: another plug-in took the name"
            else:
                try:
                    self.commands[ep.name] = _group(ep)
                    continue
                except Exception as exc:  # a broken plug-in must never stop the other commands
                    problem = "is unavailable: " + " ".join(f"{type(exc).__name__}: {exc}".split())
            where = ep.value + (f" from {ep.dist.name}" if ep.dist is not None else "")
            problems.append(f"plug-in command {ep.name!r} ({where}) {problem}")
        return problems


def _group(ep: EntryPoint) -> TyperGroup:
    app = ep.load()
    if not isinstance(app, typer.Typer):
        raise TypeError(f"{ep.value} is a {type(app).__name__}, not a typer.Typer")
    group = typer.main.get_group(app)  # a group even for a one-command app, as add_typer mounts it
    group.name = ep.name
    return group
