"""The front door: ``python run.py -m ...`` → tracked jobs in MLflow (subprocesses, temp stores)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from ptycho.evaluation import METRIC_KEYS

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = {"config.yaml", "metrics.json", "reconstruction.npz", "figures", "model"}
FIGURES = {"figures/reconstruction.png", "figures/diffraction.png",
           "figures/training_curves.png", "figures/frc.png"}


def run(args: list[str], store: Path, *, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` against a store, cache and output folders under ``store``."""
    command = [
        sys.executable, "run.py", *args,
        f"tracking.uri=sqlite:///{store}/mlflow.db",
        f"data.cache_dir={store}/cache",
        f"hydra.sweep.dir={store}/sweeps/{time.time_ns()}",
        f"hydra.run.dir={store}/runs/{time.time_ns()}",
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"})


def client(store: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")


def runs(store: Path, experiment: str = "smoke", view=ViewType.ACTIVE_ONLY):
    mlflow = client(store)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    return mlflow.search_runs([found.experiment_id], run_view_type=view, max_results=1000)


def parents_and_children(store: Path):
    all_runs = runs(store)
    parents = [r for r in all_runs if r.data.tags.get("ptycho.role") == "sweep"]
    children = [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    store = tmp_path_factory.mktemp("smoke_store")
    done = run(["-m", "experiment=smoke", "N=16,32", "gridsize=1,2"], store)
    return store, done


@pytest.mark.slow
def test_a_smoke_sweep_makes_one_parent_and_four_complete_children(smoke_sweep) -> None:
    store, done = smoke_sweep
    assert done.returncode == 0, done.stderr[-4000:]
    parents, children = parents_and_children(store)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert json.loads(parent.data.tags["sweep.overrides"])[:3] == ["experiment=smoke", "N=16,32",
                                                                    "gridsize=1,2"]
    assert parent.data.tags["git_commit"]
    mlflow = client(store)
    experiment = mlflow.get_experiment_by_name("smoke")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    names = set()
    for child in children:
        names.add(child.info.run_name)
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        for key in (*METRIC_KEYS, "measured_dose", "time_compile_s", "time_train_s",
                    "time_eval_s", "train_patterns_per_s", "params_count"):
            assert math.isfinite(child.data.metrics[key]), key
        history = mlflow.get_metric_history(child.info.run_id, "train_loss")
        assert [m.step for m in history] == [1, 2]
        params = child.data.params
        assert params["dose"] == "100000.0" and params["N"] in ("16", "32")
        assert params["gridsize"] in ("1", "2") and params["train.epochs"] == "2"
        assert child.data.metrics["N"] == float(params["N"])
        for tag in ("config_hash", "git_commit", "git_dirty", "version.tensorflow", "devices",
                    "xla", "overrides", "process_id"):
            assert child.data.tags.get(tag), tag
        assert child.data.tags["xla"] == "true"
        top = {a.path for a in mlflow.list_artifacts(child.info.run_id)}
        assert ARTIFACTS <= top
        figures = {a.path for a in mlflow.list_artifacts(child.info.run_id, "figures")}
        assert figures == FIGURES
        assert all(a.file_size > 5000 for a in mlflow.list_artifacts(child.info.run_id,
                                                                     "figures"))
        model = {a.path for a in mlflow.list_artifacts(child.info.run_id, "model")}
        assert model == {"model/model.json", "model/model.weights.h5"}
    assert names == {f"N{n}_g{g}_dose1e5_poisson_nll_pinn_s0" for n in (16, 32) for g in (1, 2)}
    assert "FINISHED" in done.stdout and "N32_g2_dose1e5_poisson_nll_pinn_s0" in done.stdout


@pytest.mark.slow
def test_rerunning_a_finished_sweep_skips_everything_then_reruns_only_a_deleted_child(
    smoke_sweep,
) -> None:
    store, first = smoke_sweep
    assert first.returncode == 0, first.stderr[-3000:]
    again = run(["-m", "experiment=smoke", "N=16,32", "gridsize=1,2"], store)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("SKIPPED") == 4
    _, children = parents_and_children(store)
    assert len(children) == 4

    victim = next(c for c in children if c.info.run_name == "N32_g1_dose1e5_poisson_nll_pinn_s0")
    client(store).delete_run(victim.info.run_id)
    third = run(["-m", "experiment=smoke", "N=16,32", "gridsize=1,2"], store)
    assert third.returncode == 0, third.stderr[-3000:]
    parents, children = parents_and_children(store)
    assert len(parents) == 3
    assert sorted(c.info.run_name for c in children) == sorted(
        f"N{n}_g{g}_dose1e5_poisson_nll_pinn_s0" for n in (16, 32) for g in (1, 2))
    rerun = next(c for c in children if c.info.run_name == victim.info.run_name)
    assert rerun.info.run_id != victim.info.run_id
    newest_parent = max(parents, key=lambda p: p.info.start_time)
    assert rerun.data.tags["mlflow.parentRunId"] == newest_parent.info.run_id
    assert third.stdout.count("SKIPPED") == 3


@pytest.mark.slow
def test_one_failed_job_does_not_stop_the_others(tmp_path: Path) -> None:
    done = run(["-m", "experiment=smoke", "N=32,48", "train.learning_rate=1e-3,1e6"], tmp_path)
    assert done.returncode != 0
    parents, children = parents_and_children(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FAILED"  # closed, and says so
    by_name = {(c.data.params.get("N"), c.data.params.get("train.learning_rate")): c
               for c in children}
    assert len(children) == 4
    assert by_name[("32", "0.001")].info.status == "FINISHED"
    diverged = by_name[("32", "1000000.0")]
    assert diverged.info.status == "FAILED"
    assert "training diverged" in diverged.data.tags["error"]
    for lr in ("0.001", "1000000.0"):
        invalid = by_name[("48", lr)]
        assert invalid.info.status == "FAILED"
        assert "N=48" in invalid.data.tags["error"]
    summary = done.stdout
    assert "N48_g1_dose1e5_poisson_nll_pinn_s0" in summary and "FAILED" in summary
    assert "N=48: N must be an integer power of two >= 16, got 48" in summary
    assert "3 of 4 jobs failed" in done.stderr


BAD_INPUTS = [
    (["N=48"], "N=48"),
    (["N=8"], "N=8"),
    (["gridsize=0"], "gridsize=0"),
    (["dose=0"], "dose=0"),
    (["dose=-1"], "dose=-1"),
    (["dose=abc"], "abc"),
    (["dose=nan"], "dose=nan"),
    (["loss=foo"], "foo"),
    (["model=foo"], "model/foo"),
    (["data.object.kind=circles"], "circles"),
    (["train.epochs=-1"], "train.epochs=-1"),
    (["Nn=64"], "Nn"),
    (["data/object=npz", "data.object.path=/no/such/object.npz"], "/no/such/object.npz"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "named"), BAD_INPUTS, ids=lambda v: str(v))
def test_bad_input_exits_non_zero_naming_the_key_and_value(
    overrides: list[str], named: str, tmp_path: Path
) -> None:
    done = run(["experiment=smoke", *overrides], tmp_path, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert named in output, output[-2000:]
    key = overrides[-1].split("=")[0].split("/")[-1]
    assert key in output, output[-2000:]
    assert runs(tmp_path) == []  # nothing was tracked
    assert "epoch 1/" not in output  # no work was done


@pytest.mark.slow
def test_dry_run_previews_a_twelve_job_sweep_quickly_without_runs(tmp_path: Path) -> None:
    start = time.perf_counter()
    done = run(["-m", "experiment=smoke", "dry_run=true", "N=16,32", "gridsize=1,2",
                "dose=1e3,1e4,1e5"], tmp_path, timeout=300)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    assert elapsed < 60
    assert done.stderr.count("would run") + done.stdout.count("would run") == 12
    assert "sweep: 12 jobs" in done.stdout
    assert runs(tmp_path) == []
