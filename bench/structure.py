"""The import graph of the ``ptycho`` package by layer, and its size per package.

Reads the source with :mod:`ast` (imports nothing it analyses) and walks every node of each file,
so imports inside functions and ``if TYPE_CHECKING:`` blocks count like top-level ones. Each
top-level module or subpackage (``ptycho.config``, ``ptycho.data``, ...) is one node; an import of
``ptycho.data.scan`` is an edge to ``ptycho.data`` (importing it runs ``ptycho/data/__init__.py``).
The layers are read from the import contracts in ``pyproject.toml``, which ``lint-imports``
enforces (``make test``); this script only draws and measures.

    python bench/structure.py               # this checkout
    python bench/structure.py --root PATH   # another checkout (or its ptycho/ folder)
"""

from __future__ import annotations

import argparse
import ast
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

PACKAGE = "ptycho"


def layers(root: Path) -> list[list[str]]:
    """The layers contract of ``root/pyproject.toml``, lowest first, as node names."""
    config = tomllib.loads((Path(root) / "pyproject.toml").read_text())
    for contract in config.get("tool", {}).get("importlinter", {}).get("contracts", []):
        if contract.get("type") == "layers":
            return [[name.strip() for name in layer.replace(":", "|").split("|")]
                    for layer in reversed(contract["layers"])]
    return []


def layer_of(node: str, ordered: list[list[str]]) -> int | None:
    """1-based layer of a node, ``None`` when it is in no layer."""
    for number, names in enumerate(ordered, start=1):
        if node in names:
            return number
    return None


def package_dir(root: Path) -> Path:
    """The ``ptycho/`` folder of a checkout ``root`` (or ``root`` itself when it is that folder)."""
    root = Path(root)
    if root.name == PACKAGE and (root / "__init__.py").is_file():
        return root
    candidate = root / PACKAGE
    if not (candidate / "__init__.py").is_file():
        raise ValueError(f"no {PACKAGE}/ package under {str(root)!r}")
    return candidate


def module_name(path: Path, package: Path) -> tuple[str, bool]:
    """Dotted name of the file ``path`` inside ``package`` and whether it is a package's
    ``__init__.py``."""
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    is_init = parts[-1] == "__init__"
    if is_init:
        parts = parts[:-1]
    return ".".join(parts), is_init


def imported_names(tree: ast.AST, module: str, is_init: bool) -> list[tuple[str, int]]:
    """``(dotted name, line)`` of everything ``tree`` imports, anywhere in the file.

    ``import a.b`` gives ``a.b``; ``from a import b, c`` gives ``a.b`` and ``a.c`` (``b`` may be a
    submodule or an attribute: either way the import runs ``a``); ``from a import *`` gives ``a``.
    Relative imports are resolved against ``module``.
    """
    package_parts = module.split(".") if is_init else module.split(".")[:-1]
    names: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                keep = len(package_parts) - (node.level - 1)
                base = ".".join(package_parts[: max(keep, 0)])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                full = source if alias.name == "*" else f"{source}.{alias.name}"
                names.append((full.strip("."), node.lineno))
    return names


def file_imports(path: Path, package: Path) -> list[tuple[str, int]]:
    """:func:`imported_names` of one file of ``package``."""
    module, is_init = module_name(path, package)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return imported_names(tree, module, is_init)


def _node(dotted: str, top_level: set[str]) -> str | None:
    """The graph node of a dotted name, ``None`` outside the package."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) > 1 and parts[1] in top_level:
        return f"{PACKAGE}.{parts[1]}"
    return PACKAGE  # the package's own __init__ (e.g. ``from ptycho import __version__``)


def _top_level(package: Path) -> set[str]:
    names = {path.stem for path in package.glob("*.py") if path.stem != "__init__"}
    names |= {path.name for path in package.iterdir() if (path / "__init__.py").is_file()}
    return names


def _source_node(path: Path, package: Path) -> str:
    relative = path.relative_to(package).parts
    if len(relative) == 1:
        return PACKAGE if relative[0] == "__init__.py" else f"{PACKAGE}.{Path(relative[0]).stem}"
    return f"{PACKAGE}.{relative[0]}"


def import_sites(root: Path) -> dict[tuple[str, str], list[str]]:
    """``(importer, imported) → ["ptycho/x.py:LINE", ...]`` for every edge between nodes."""
    package = package_dir(root)
    top_level = _top_level(package)
    sites: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(package.rglob("*.py")):
        source = _source_node(path, package)
        where = path.relative_to(package.parent).as_posix()
        for dotted, line in file_imports(path, package):
            target = _node(dotted, top_level)
            if target is not None and target != source:
                sites[(source, target)].append(f"{where}:{line}")
    return dict(sites)


def import_graph(root: Path) -> dict[str, set[str]]:
    """``node → set of nodes it imports`` for the ``ptycho`` package of checkout ``root``.

    Every top-level module and subpackage is a key (``ptycho.config``, ``ptycho.data``, ...; the
    package's own ``__init__`` is ``ptycho``); self-imports inside a subpackage are dropped.
    """
    package = package_dir(root)
    graph: dict[str, set[str]] = {PACKAGE: set()}
    graph.update({f"{PACKAGE}.{name}": set() for name in _top_level(package)})
    for source, target in import_sites(root):
        graph[source].add(target)
    return graph


def line_count(path: Path) -> int:
    """Lines of a file, or of every ``.py`` file under a folder."""
    if path.is_dir():
        return sum(line_count(child) for child in path.rglob("*.py"))
    return len(path.read_text(encoding="utf-8").splitlines())


def report(root: Path) -> str:
    """The printed report: every node by layer with what it imports, then line counts."""
    package = package_dir(root)
    ordered = layers(package.parent)
    graph = import_graph(root)
    lines = [f"import graph of {package} (all imports, function-level included)", ""]

    def order(node: str) -> tuple[int, str]:
        return (layer_of(node, ordered) or 0, node)

    for node in sorted(graph, key=order):
        layer = layer_of(node, ordered)
        tag = f"layer {layer}" if layer is not None else "no layer"
        targets = ", ".join(sorted(graph[node], key=order)) or "-"
        lines.append(f"  {tag:<8}  {node:<22} -> {targets}")
    lines.append("\nlines per top-level module or package:")
    for node in sorted(graph, key=order):
        path = package / node.removeprefix(PACKAGE).lstrip(".")
        path = path if path.is_dir() else path.with_suffix(".py")
        if node == PACKAGE:
            path = package / "__init__.py"
        lines.append(f"  {node:<22} {line_count(path):>6}")
    lines.append(f"  {PACKAGE + '/ total':<22} {line_count(package):>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parents[1],
        help="checkout to analyse (default: this one)",
    )
    args = parser.parse_args(argv)
    print(report(args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
