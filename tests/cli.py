"""Running ``python run.py`` in a subprocess against a store of a test's own, and reading it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import ViewType

ROOT = Path(__file__).resolve().parents[1]
# No TF_CPP_MIN_LOG_LEVEL (run.py quiets TensorFlow itself); one TensorFlow thread per process
# (tests/conftest.py says why).
ENV = {"PATH": "/usr/bin:/bin", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
       "OMP_NUM_THREADS": "1"}


def command(args: list[str], store: Path, uri: str | None = None) -> list[str]:
    """``python run.py ARGS`` with store, cache and sweep folder under ``store``."""
    return [
        sys.executable, "run.py", *args,
        f"tracking.uri={uri or f'sqlite:///{store}/mlflow.db'}",
        f"data.cache_dir={store}/cache",
        f"hydra.sweep.dir={store}/sweeps/{time.time_ns()}",
        f"hydra.run.dir={store}/runs/{time.time_ns()}",
    ]


def run(args: list[str], store: Path, *, uri: str | None = None,
        timeout: int = 900) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` against ``store``; its output, never raising on failure."""
    return subprocess.run(command(args, store, uri), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False, env=ENV)


def client(store: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")


def runs(store: Path, experiment: str = "smoke") -> list:
    mlflow = client(store)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    return mlflow.search_runs([found.experiment_id], run_view_type=ViewType.ACTIVE_ONLY,
                              max_results=1000)


def parents_and_children(store: Path, experiment: str = "smoke") -> tuple[list, list]:
    everything = runs(store, experiment)
    parents = [r for r in everything if r.data.tags.get("ptycho.role") == "sweep"]
    children = [r for r in everything if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def copy_store(store: Path, destination: Path) -> Path:
    """A copy of a shared store's database (and dataset cache) to change freely; its runs'
    artifacts stay where they are (read-only use)."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy(store / "mlflow.db", destination / "mlflow.db")
    if (store / "cache").is_dir():
        shutil.copytree(store / "cache", destination / "cache", dirs_exist_ok=True)
    return destination
