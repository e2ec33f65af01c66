"""The gateway hands the API and the health monitor narrow services: no file of edge/api or edge/ops imports
edge.gateway, in any form (checked on the parsed source, so `from edge import gateway`, relative climbs and
imports under `if TYPE_CHECKING:` count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edge

ROOT = Path(edge.__file__).parent.parent
GUARDED = ("edge/api", "edge/ops")
FORBIDDEN = "edge.gateway"


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(root: Path, path: Path) -> list[tuple[int, set[str]]]:
    """Each import statement of a file: its line and the absolute dotted names it may bind."""
    name = _module_name(root, path)
    package = (name if path.name == "__init__.py" else name.rpartition(".")[0]).split(".")
    found: list[tuple[int, set[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.append((node.lineno, {alias.name for alias in node.names}))
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            # `from edge import gateway` binds the module edge.gateway
            found.append((node.lineno, {module} | {f"{module}.{alias.name}" for alias in node.names}))
    return found


def gateway_imports(root: Path) -> list[str]:
    """`path:line` of each import of edge.gateway under the guarded folders of `root`."""
    hits = []
    for folder in GUARDED:
        for path in sorted((root / folder).rglob("*.py")):
            for line, names in _imports(root, path):
                if any(n == FORBIDDEN or n.startswith(FORBIDDEN + ".") for n in names):
                    hits.append(f"{path.relative_to(root)}:{line}")
    return hits


def test_api_and_ops_do_not_import_the_gateway() -> None:
    app = ROOT / "edge/api/app.py"
    assert any("edge.api.problems" in names for _, names in _imports(ROOT, app))  # the scan reads real files
    assert gateway_imports(ROOT) == []


@pytest.mark.parametrize(
    ("folder", "source"),
    [
        ("edge/api", "import edge.gateway\n"),
        ("edge/api", "import edge.gateway as gw\n"),
        ("edge/api/routes", "from edge.gateway import Gateway\n"),
        ("edge/api/routes", "from edge import gateway\n"),
        ("edge/api/routes", "from ...gateway import Gateway\n"),
        ("edge/api/routes", "from ... import config, gateway\n"),
        ("edge/ops", "from .. import gateway\n"),
        (
            "edge/ops",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edge.gateway import Gateway\n",
        ),
    ],
)
def test_a_planted_import_of_the_gateway_is_found(tmp_path: Path, folder: str, source: str) -> None:
    (tmp_path / folder).mkdir(parents=True)
    (tmp_path / folder / "planted.py").write_text(source)
    (tmp_path / folder / "innocent.py").write_text("from edge.gateways import x\nfrom .. import config\n")
    hits = gateway_imports(tmp_path)
    assert len(hits) == 1 and hits[0].startswith(f"{folder}/planted.py:"), hits
