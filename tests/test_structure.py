"""The package's layering, read from the source by ``bench/structure.py`` (no imports executed)."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def structure() -> ModuleType:
    path = ROOT / "bench" / "structure.py"
    spec = importlib.util.spec_from_file_location("bench_structure", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass/annotation machinery looks the module up
    spec.loader.exec_module(module)
    return module


def _write(root: Path, relative: str, text: str = "") -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_lower_layer_importing_a_higher_one_is_reported(structure, tmp_path):
    _write(tmp_path, "ptycho/__init__.py")
    _write(tmp_path, "ptycho/checks.py")
    # config (layer 1) reaches data (layer 3) from inside a function, via a submodule.
    _write(tmp_path, "ptycho/config.py",
           "from ptycho.checks import x\n\ndef f():\n    from ptycho.data.scan import y\n")
    _write(tmp_path, "ptycho/data/__init__.py")
    # data (layer 3) imports models (layer 4) relatively, at top level.
    _write(tmp_path, "ptycho/data/scan.py", "from ..models import build\nfrom . import grouping\n")
    _write(tmp_path, "ptycho/models/__init__.py", "from ptycho.data import scan\n")

    graph = structure.import_graph(tmp_path)
    assert graph["ptycho.config"] == {"ptycho.checks", "ptycho.data"}
    assert graph["ptycho.data"] == {"ptycho.models"}  # the self-import is dropped
    assert graph["ptycho.models"] == {"ptycho.data"}
    found = structure.violations(graph)
    assert found == [
        "ptycho.config (layer 1) -> ptycho.data (layer 3)",
        "ptycho.data (layer 3) -> ptycho.models (layer 4)",
    ]
    assert structure.main(["--root", str(tmp_path)]) == 1


def test_clean_tree_has_no_violation(structure, tmp_path):
    _write(tmp_path, "ptycho/__init__.py")
    _write(tmp_path, "ptycho/checks.py")
    _write(tmp_path, "ptycho/job.py", "import ptycho.checks\nfrom ptycho import data\n")
    _write(tmp_path, "ptycho/data/__init__.py", "from ptycho.checks import x\n")
    graph = structure.import_graph(tmp_path)
    assert graph["ptycho.job"] == {"ptycho.checks", "ptycho.data"}
    assert structure.violations(graph) == []
    assert structure.main(["--root", str(tmp_path)]) == 0


def test_config_imports_no_framework_and_no_data_layer(structure):
    """``ptycho.config`` is the schema: importing it must not pull TensorFlow, Keras or the data
    layer (which does). Every import in the file counts, function-level ones included."""
    path = ROOT / "ptycho" / "config.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {name for name, _ in structure.imported_names(tree, "ptycho.config", False)}
    forbidden = ("tensorflow", "keras", "ptycho.data")
    bad = sorted(
        name for name in names
        if any(name == banned or name.startswith(f"{banned}.") for banned in forbidden)
    )
    assert not bad, f"ptycho/config.py imports {bad}"
