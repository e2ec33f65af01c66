"""The import boundaries of the source tree, checked on the AST of every file.

Each import is resolved to the absolute module it names — `import a.b`, `from a import b` (a.b may be a
submodule, so `from modules import hvac` names `modules.hvac`), relative imports against the file's package,
and `importlib.import_module` / `__import__` called with a literal string — then judged by the areas of the
importing file and of the target:

- a plug-in (drivers/<name>, modules/<name>, cloud_sync) imports of the kernel only `edge.sdk` and its
  submodules, and no other plug-in (so modules never import each other, drivers never import modules);
- a relative import never climbs out of the plug-in's own folder;
- the kernel (edge/) imports no plug-in, and the SDK (edge/sdk) nothing of the kernel outside itself, so
  that what a plug-in imports stands alone; the two bridges are the exception (`SDK_BRIDGES`): the isolated
  runner loads the module through the kernel's registry, and `edge.sdk.cli` hands plug-in commands the
  kernel's config loading and outbox inspection, so that the plug-ins themselves never import the kernel;
- simulators import nothing of the gateway (edge/, not even edge.sdk, nor any plug-in): they are
  independent devices (STYLE habit 16);
- no file imports another module's private names (`from x import _y`), a private module from outside the
  package that holds it (`x._m`), or reads `x._y` on a project module it imported.

Third-party and standard-library imports are never judged; a dynamic import whose name is not a literal
cannot be resolved and is not judged either.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PLUGIN_AREAS = ("drivers", "modules", "cloud_sync")
SCANNED = ("edge", *PLUGIN_AREAS, "simulators", "bench")
PROJECT = (*SCANNED, "tests")  # the top-level packages whose private names are the project's own

PLUGIN_KERNEL = "a plug-in imports of the project only edge.sdk and its own folder"
PLUGIN_PLUGIN = "a plug-in never imports another plug-in"
RELATIVE_CLIMB = "a relative import never climbs out of the plug-in's folder"
KERNEL_PLUGIN = "the kernel names no plug-in"
SDK_KERNEL = "the SDK imports nothing of the kernel outside edge.sdk"
SDK_BRIDGES = ("edge.sdk.cli", "edge.sdk.runner")  # the SDK's doors into the kernel, on purpose
SIMULATOR_GATEWAY = "simulators import nothing of the gateway"
PRIVATE_NAME = "no import of another module's private names"


@dataclass(frozen=True, slots=True)
class Violation:
    path: Path  # relative to the checked root
    line: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.detail}"


@dataclass(frozen=True, slots=True)
class _Import:
    target: str  # absolute dotted name
    line: int
    relative: bool = False
    private_from: str | None = None  # `from <private_from> import _name` where target is <private_from>._name


def check_tree(root: Path) -> list[Violation]:
    """Every boundary violation under `root` (a checkout, or a fake tree with the same top-level folders)."""
    found: list[Violation] = []
    for path in python_files(root):
        found.extend(check_file(root, path))
    return found


def python_files(root: Path) -> list[Path]:
    return sorted(p for area in SCANNED for p in (root / area).rglob("*.py"))


def check_file(root: Path, path: Path) -> Iterator[Violation]:
    relative = path.relative_to(root)
    module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    for found in _imports(tree, package):
        for rule, detail in _judge(module, found, root):
            yield Violation(relative, found.line, rule, detail)
    for line, name in _private_attributes(tree, module, package, root):
        yield Violation(relative, line, PRIVATE_NAME, f"reads {name}")


def plugin_of(module: str) -> str | None:
    """The plug-in a module belongs to (`drivers.modbus`, `modules.hvac`, `cloud_sync`), or the bare area
    (`drivers`, `modules`) for the namespace packages themselves; None outside the plug-in areas."""
    parts = module.split(".")
    if parts[0] == "cloud_sync":
        return "cloud_sync"
    if parts[0] in PLUGIN_AREAS:
        return ".".join(parts[:2])
    return None


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _judge(module: str, found: _Import, root: Path) -> Iterator[tuple[str, str]]:
    target = found.target
    top = target.split(".")[0]
    own_plugin, target_plugin = plugin_of(module), plugin_of(target)
    names = f"imports {target}"
    if own_plugin is not None:
        if found.relative and target_plugin != own_plugin:
            yield RELATIVE_CLIMB, f"{names} (outside {own_plugin})"
        elif target_plugin is not None and target_plugin != own_plugin:
            yield PLUGIN_PLUGIN, names
        elif top in PROJECT and target_plugin is None and not _inside(target, "edge.sdk"):
            yield PLUGIN_KERNEL, names
    elif _inside(module, "edge") and target_plugin is not None:
        yield KERNEL_PLUGIN, names
    elif (
        _inside(module, "edge.sdk")
        and module not in SDK_BRIDGES
        and top in PROJECT
        and not _inside(target, "edge.sdk")
    ):
        yield SDK_KERNEL, names
    elif _inside(module, "simulators") and (top == "edge" or target_plugin is not None):
        yield SIMULATOR_GATEWAY, names
    if top not in PROJECT:
        return
    if found.private_from is not None and found.private_from != module and not _is_module(root, target):
        yield PRIVATE_NAME, f"imports {target.rpartition('.')[2]} from {found.private_from}"
        return
    parts = target.split(".")
    for index, part in enumerate(parts):
        holder = ".".join(parts[:index])
        if _is_private(part) and not _inside(module, holder):
            yield PRIVATE_NAME, f"{names} (private to {holder})"
            return


def _is_module(root: Path, name: str) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(tree: ast.AST, package: str) -> Iterator[_Import]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _Import(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, package)
            for alias in node.names:
                if alias.name == "*":
                    yield _Import(base, node.lineno, node.level > 0)
                else:
                    private = base if _is_private(alias.name) else None
                    yield _Import(f"{base}.{alias.name}", node.lineno, node.level > 0, private)
        elif isinstance(node, ast.Call) and (name := _dynamic_import(node)) is not None:
            level = len(name) - len(name.lstrip("."))
            anchor = _literal(node.args[1]) if len(node.args) > 1 else None
            yield _Import(_resolve(name[level:], level, anchor or package), node.lineno, level > 0)


def _resolve(name: str, level: int, package: str) -> str:
    """`from <level dots><name>` inside `package`, as an absolute name; a climb above the top keeps its dots."""
    if level == 0:
        return name
    parts = package.split(".")
    if level > len(parts):
        return "." * level + name
    base = ".".join(parts[: len(parts) - level + 1])
    return f"{base}.{name}" if name else base


def _dynamic_import(node: ast.Call) -> str | None:
    func = node.func
    callee = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if callee not in ("import_module", "__import__") or not node.args:
        return None
    return _literal(node.args[0])


def _literal(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _private_attributes(tree: ast.AST, module: str, package: str, root: Path) -> Iterator[tuple[int, str]]:
    """`x._y` where x is a name bound to another project module by an import in this file."""
    bound = _bound_modules(tree, package, root)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
            continue
        owner = _dotted(node.value)
        if owner is None:
            continue
        head, _, rest = owner.partition(".")
        target = bound.get(head)
        if target is None:
            continue
        full = f"{target}.{rest}" if rest else target
        if full != module:
            yield node.lineno, f"{full}.{node.attr}"


def _bound_modules(tree: ast.AST, package: str, root: Path) -> dict[str, str]:
    """Local name → project module, for `import a.b` (binds a), `import a.b as x`, `from a import b as x`."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name if alias.asname else alias.name.split(".")[0]
                bound[alias.asname or name] = name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, package)
            for alias in node.names:
                if _is_module(root, f"{base}.{alias.name}"):
                    bound[alias.asname or alias.name] = f"{base}.{alias.name}"
    return {name: target for name, target in bound.items() if target.split(".")[0] in PROJECT}


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (inner := _dotted(node.value)) is not None:
        return f"{inner}.{node.attr}"
    return None
