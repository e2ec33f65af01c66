"""Tables for people, JSON for scripts: the list and show commands print their rows through `emit`.

A table on a terminal fits the terminal. Piped or redirected, rich would cut it at 80 columns ("192.168.1.…");
there every value is printed whole instead, however wide the table gets. `--json` prints the same rows as one
JSON array of objects, one per table row, keyed by field, with numbers, lists and objects kept typed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["JSON_OPTION", "Column", "cell", "console", "emit", "emit_json"]

JSON_OPTION: Any = typer.Option(
    False, "--json", help="Print a JSON array of objects (the table's fields) instead of the table."
)
_PIPED_WIDTH = 100_000  # wide enough for any row: the table still takes only the width its values need


def cell(value: Any) -> str:
    """How a value reads in a table cell: nothing for None, lists joined, objects as key=value."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class Column:
    key: str  # the row's field, and the key in --json output
    heading: str  # the table's column heading
    show: Callable[[Any], str] = cell  # the field in a table cell


def console() -> Console:
    """rich's console for stdout: the terminal's width, or unlimited when stdout is a pipe or a file."""
    return Console() if sys.stdout.isatty() else Console(width=_PIPED_WIDTH)


def emit(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    as_json: bool,
    title: str | None = None,
) -> None:
    """Print `rows` as a table of `columns`, or (`as_json`) as a JSON array of the rows."""
    if as_json:
        emit_json(rows)
        return
    table = Table(*(c.heading for c in columns), title=title)
    for row in rows:
        table.add_row(*(c.show(row.get(c.key)) for c in columns))
    console().print(table)


def emit_json(rows: Sequence[Mapping[str, Any]]) -> None:
    """The rows as one JSON array, `[]` when there are none: `--json` of commands whose people's view is lines."""
    typer.echo(json.dumps([dict(row) for row in rows], indent=2, ensure_ascii=False, default=str))
