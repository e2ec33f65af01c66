"""`python -m bench ...` is `edge bench ...` (the same typer command)."""

from __future__ import annotations

import typer

from edge.cli.bench_cmd import bench

if __name__ == "__main__":
    typer.run(bench)
