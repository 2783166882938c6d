"""The import graph of the ``ptycho`` package by layer, with the size of its "shell".

Reads the source with :mod:`ast` (imports nothing it analyses) and walks every node of each file,
so imports inside functions and ``if TYPE_CHECKING:`` blocks count like top-level ones. Each
top-level module or subpackage (``ptycho.config``, ``ptycho.data``, ...) is one node; an import of
``ptycho.data.scan`` is an edge to ``ptycho.data`` (importing it runs ``ptycho/data/__init__.py``).

Every node gets a layer from :data:`LAYERS`. A node may import nodes of its own layer or of lower
ones; an import from a lower layer to a higher one is a violation. Modules listed in ``LAYERS``
that do not exist yet are simply absent from the graph.

    python bench/structure.py               # this checkout
    python bench/structure.py --root PATH   # another checkout (or its ptycho/ folder)

Exit status 1 when there is a violation.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = "ptycho"

# Lowest first. Layer n may import layers 1..n.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("checks", "config", "sweep_state"),
    ("physics", "runtime", "tracking"),
    ("data",),
    ("evaluation", "models"),
    ("training", "viz", "iterative"),
    ("pipeline",),
    ("artifacts",),
    ("job",),
    ("isolate", "sweep"),
)

# The orchestration around the science core, whose size we watch.
SHELL = (
    "config.py",
    "job.py",
    "pipeline.py",
    "artifacts.py",
    "sweep.py",
    "sweep_state.py",
    "isolate.py",
    "runtime.py",
    "tracking/",
)


def layer_of(node: str) -> int | None:
    """1-based layer of ``ptycho.<name>``, ``None`` when the name is in no layer."""
    name = node.removeprefix(f"{PACKAGE}.")
    for number, names in enumerate(LAYERS, start=1):
        if name in names:
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


def violations(graph: dict[str, set[str]]) -> list[str]:
    """``"a (layer i) -> b (layer j)"`` for every edge with ``i < j``, sorted."""
    found = []
    for source, targets in graph.items():
        low = layer_of(source)
        for target in targets:
            high = layer_of(target)
            if low is not None and high is not None and low < high:
                found.append(f"{source} (layer {low}) -> {target} (layer {high})")
    return sorted(found)


def line_count(path: Path) -> int:
    """Lines of a file, or of every ``.py`` file under a folder."""
    if path.is_dir():
        return sum(line_count(child) for child in path.rglob("*.py"))
    return len(path.read_text(encoding="utf-8").splitlines())


def report(root: Path) -> tuple[str, int]:
    """The printed report and the number of violations."""
    package = package_dir(root)
    graph = import_graph(root)
    sites = import_sites(root)
    lines = [f"import graph of {package} (all imports, function-level included)", ""]

    def order(node: str) -> tuple[int, str]:
        return (layer_of(node) or 0, node)

    for node in sorted(graph, key=order):
        layer = layer_of(node)
        tag = f"layer {layer}" if layer is not None else "no layer"
        targets = ", ".join(sorted(graph[node], key=order)) or "-"
        lines.append(f"  {tag:<8}  {node:<20} -> {targets}")
    unlayered = sorted(n for n in graph if layer_of(n) is None and n != PACKAGE)
    if unlayered:
        lines.append(f"\n  not in any layer (not checked): {', '.join(unlayered)}")

    found = violations(graph)
    lines.append(f"\nlayer violations (a lower layer importing a higher one): {len(found)}")
    for text in found:
        source, target = text.split(" (")[0], text.split(" -> ")[1].split(" (")[0]
        lines.append(f"  {text}    at {', '.join(sites[(source, target)])}")

    lines.append("\nshell modules (lines):")
    shell_total = 0
    for name in SHELL:
        path = package / name.rstrip("/")
        if path.exists():
            count = line_count(path)
            shell_total += count
            lines.append(f"  {name:<16} {count:>6}")
        else:
            lines.append(f"  {name:<16} {'absent':>6}")
    total = line_count(package)
    lines.append(f"  {'shell total':<16} {shell_total:>6}")
    lines.append(f"  {PACKAGE + '/ total':<16} {total:>6}   (shell {shell_total / total:.0%})")
    return "\n".join(lines), len(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parents[1],
        help="checkout to analyse (default: this one)",
    )
    args = parser.parse_args(argv)
    text, count = report(args.root)
    print(text)
    return 1 if count else 0


if __name__ == "__main__":
    sys.exit(main())
