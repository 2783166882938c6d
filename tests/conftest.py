"""Test-wide setup: quiet TensorFlow in this process, skip ``gpu`` tests where there is no GPU,
and the shared fixtures: a migrated empty MLflow store to copy, and one smoke sweep.

Setting the environment here is test infrastructure; the library itself reads no environment
variable outside ``ptycho.runtime`` and ``ptycho.runner.tracking``.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
import time
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
SMOKE_SWEEP_TIMEOUT_S = 1500


def _skip_gpu_tests(items: list[pytest.Item]) -> None:
    """``gpu`` tests are skipped where TensorFlow sees no GPU."""
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
        from ptycho.runner.tracking import Tracker

        Tracker(f"sqlite:///{folder}/mlflow.db")

    return _once(_shared_folder(tmp_path_factory) / "store_template", make) / "mlflow.db"


@pytest.fixture
def store(tmp_path: Path, store_template: Path) -> Path:
    """A fresh store of this test's own: ``<store>/mlflow.db`` (a copy of the empty one)."""
    shutil.copy(store_template, tmp_path / "mlflow.db")
    return tmp_path


def _smoke_folder(config: pytest.Config) -> Path:
    # pytest's own tmp_path_factory (what the fixture of that name returns), reachable from a hook
    return _shared_folder(config._tmp_path_factory) / "smoke_sweep"  # type: ignore[attr-defined]


def _start_smoke_sweep(folder: Path) -> None:
    """:data:`SMOKE_SWEEP` in the background, once across the session's processes: its output
    goes to ``folder/stdout`` and ``folder/stderr``, its exit code to ``folder/returncode``."""
    from tests.cli import ENV, ROOT, command

    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if folder.exists():
            return  # another worker started it
        folder.mkdir()
        argv = " ".join(shlex.quote(part) for part in command(SMOKE_SWEEP, folder))
        script = (f"{argv} > {folder}/stdout 2> {folder}/stderr; "
                  f"echo $? > {folder}/returncode.part && mv {folder}/returncode.part "
                  f"{folder}/returncode")
        subprocess.Popen(["/bin/sh", "-c", script], cwd=ROOT, env=ENV, start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests that read the shared smoke sweep go last, so that the sweep (started in the
    background once collection is done) runs beside the other tests rather than in front of a
    waiting worker."""
    items.sort(key=lambda item: "smoke_sweep" in getattr(item, "fixturenames", ()))
    _skip_gpu_tests(items)


def pytest_collection_finish(session: pytest.Session) -> None:
    if any("smoke_sweep" in getattr(item, "fixturenames", ()) for item in session.items):
        _start_smoke_sweep(_smoke_folder(session.config))


@pytest.fixture(scope="session")
def smoke_sweep(request: pytest.FixtureRequest) -> tuple[Path, subprocess.CompletedProcess]:
    """:data:`SMOKE_SWEEP` through ``python run.py``, once per session (started in the
    background at collection); its store and output. Tests that change the store work on a
    copy (``tests.cli.copy_store``)."""
    folder = _smoke_folder(request.config)
    _start_smoke_sweep(folder)  # a no-op unless collection did not start it
    deadline = time.monotonic() + SMOKE_SWEEP_TIMEOUT_S
    while not (folder / "returncode").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the shared smoke sweep did not end in {SMOKE_SWEEP_TIMEOUT_S} s "
                               f"(its output: {folder}/stdout, {folder}/stderr)")
        time.sleep(1.0)
    done = subprocess.CompletedProcess(
        SMOKE_SWEEP, int((folder / "returncode").read_text()),
        (folder / "stdout").read_text(), (folder / "stderr").read_text())
    return folder, done
