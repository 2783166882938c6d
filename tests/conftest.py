"""Test-wide setup: quiet TensorFlow in this process, skip ``gpu`` tests where there is no GPU,
and the shared fixtures: a migrated empty MLflow store to copy, and one smoke sweep.

Setting the environment here is test infrastructure; the library itself reads no environment
variable outside ``ptycho.runtime`` and ``ptycho.tracking``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One thread per TensorFlow process: the suite runs two workers on two cores, and each worker
# starts job processes of its own; more threads only wait on each other (measured: three
# concurrent smoke jobs take 12% less CPU and wall time with one thread each).
SINGLE_THREADED = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
                   "OMP_NUM_THREADS": "1"}
for _key, _value in SINGLE_THREADED.items():
    os.environ.setdefault(_key, _value)

SMOKE_SWEEP = ["-m", "experiment=smoke", "dose=1e3,1e5", "loss=poisson_nll,mae", "seed=0,1"]
"""The shared sweep: 8 jobs of N=16 (2 doses x 2 losses x 2 seeds) on one fresh store."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    skip = pytest.mark.skip(reason="needs a GPU; TensorFlow sees none on this machine")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def _shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every xdist worker of this session sees (the session's base temp's parent when
    workers run, else the base temp itself)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _once(folder: Path, make) -> Path:
    """``make(folder)`` exactly once across the session's processes (a file lock); returns the
    folder. A make that failed is not retried: its error file is re-raised everywhere."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done, error = folder / ".done", folder.with_suffix(".error")
        if error.exists():
            raise RuntimeError(error.read_text())
        if not done.exists():
            folder.mkdir(exist_ok=True)
            try:
                make(folder)
            except BaseException as failure:
                error.write_text(f"{type(failure).__name__}: {failure}")
                raise
            done.write_text("ok")
    return folder


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, created and migrated once (migrating costs seconds)."""

    def make(folder: Path) -> None:
        from ptycho.tracking import Tracker

        Tracker(f"sqlite:///{folder}/mlflow.db")

    return _once(_shared_folder(tmp_path_factory) / "store_template", make) / "mlflow.db"


@pytest.fixture
def store(tmp_path: Path, store_template: Path) -> Path:
    """A fresh store of this test's own: ``<store>/mlflow.db`` (a copy of the empty one)."""
    shutil.copy(store_template, tmp_path / "mlflow.db")
    return tmp_path


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory: pytest.TempPathFactory,
                store_template: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """:data:`SMOKE_SWEEP` through ``python run.py``, once per session; its store and output.
    Tests that change the store work on a copy (``tests.cli.copy_store``)."""
    from tests.cli import run

    def make(folder: Path) -> None:
        shutil.copy(store_template, folder / "mlflow.db")
        done = run(SMOKE_SWEEP, folder)
        (folder / "output.json").write_text(json.dumps(
            {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}))

    folder = _once(_shared_folder(tmp_path_factory) / "smoke_sweep", make)
    output = json.loads((folder / "output.json").read_text())
    done = subprocess.CompletedProcess(SMOKE_SWEEP, output["returncode"], output["stdout"],
                                       output["stderr"])
    return folder, done
