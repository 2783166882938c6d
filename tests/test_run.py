"""The front door, where the process is the subject: ``python run.py`` exit codes, output and
what a whole sweep leaves in MLflow. Job-level behaviour is tested in-process (test_job.py)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from ptycho.evaluation import METRIC_KEYS
from tests.cli import client, copy_store, parents_and_children, run, runs

NAMES = {f"N16_g1_dose{dose}_{loss}_pinn_s{seed}" for dose in ("1e3", "1e5")
         for loss in ("poisson_nll", "mae") for seed in (0, 1)}
BANNERS = ("oneDNN", "cuda", "cuInit", "absl::InitializeLog", "cpu_feature_guard")


@pytest.mark.slow
def test_a_smoke_sweep_makes_one_parent_and_complete_children(smoke_sweep) -> None:
    store, done = smoke_sweep
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.splitlines()[0].startswith("sweep: 8 jobs -> ")  # ours, first
    assert not any(banner in done.stdout + done.stderr for banner in BANNERS)
    parents, children = parents_and_children(store)
    assert len(parents) == 1 and len(children) == 8
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert json.loads(parent.data.tags["sweep.overrides"])[:2] == ["experiment=smoke",
                                                                    "dose=1e3,1e5"]
    assert parent.data.tags["git_commit"]
    assert parent.data.tags["jobs_total"] == "8" and parent.data.tags["jobs_failed"] == "0"
    assert not {"jobs_total", "jobs_failed", "jobs_skipped"} & set(parent.data.metrics)
    mlflow = client(store)
    experiment = mlflow.get_experiment_by_name("smoke")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # the UI's first view: the sweep prints the link that opens its dose-response view
    link = ("http://127.0.0.1:5000/#/experiments/" f"{experiment.experiment_id}/runs?workflowType"
            "=machine_learning&compareRunsMode=CHART&viewStateShareKey=dose-response")
    assert link in done.stdout
    assert "mlflow.sharedViewState.dose-response" in experiment.tags
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        for key in METRIC_KEYS:
            assert math.isfinite(child.data.metrics[key]), key
        assert child.data.params["train.epochs"] == "2"
    assert {c.info.run_name for c in children} == NAMES
    assert "report: " in done.stdout  # the end-of-sweep report callback ran too
    assert "summary.txt" in {a.path for a in mlflow.list_artifacts(parent.info.run_id)}
    for name in NAMES:
        assert name in done.stdout


@pytest.mark.slow
def test_rerunning_a_sweep_skips_what_finished_and_reruns_a_deleted_child(
    smoke_sweep, tmp_path: Path
) -> None:
    shared, first = smoke_sweep
    assert first.returncode == 0, first.stderr[-3000:]
    store = copy_store(shared, tmp_path)
    _, children = parents_and_children(store)
    victim = next(c for c in children if c.info.run_name == "N16_g1_dose1e5_mae_pinn_s1")
    client(store).delete_run(victim.info.run_id)
    again = run(list(first.args), store)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("SKIPPED") == 7
    parents, children = parents_and_children(store)
    assert len(parents) == 2 and {c.info.run_name for c in children} == NAMES
    rerun = next(c for c in children if c.info.run_name == victim.info.run_name)
    assert rerun.info.run_id != victim.info.run_id and rerun.info.status == "FINISHED"
    newest = max(parents, key=lambda p: p.info.start_time)
    assert rerun.data.tags["mlflow.parentRunId"] == newest.info.run_id


REVERSED = ["~hydra.callbacks.sweep",
            "+hydra.callbacks.sweep._target_=ptycho.runner.sweep.SweepCallback"]


@pytest.mark.slow
@pytest.mark.parametrize(("order", "rates"), [([], "1e-3,1e6"), (REVERSED, "1e6")],
                         ids=["yaml_order", "reversed"])
def test_a_failed_job_and_the_end_of_sweep_callbacks_in_either_order(
    order: list[str], rates: str, store: Path
) -> None:
    """A sweep with an invalid job (N=48) and a diverging one (learning rate 1e6), and in YAML
    order also a finishing one (its reversed twin leaves that out: one training job less)."""
    done = run(["-m", "experiment=smoke", "N=16,48", f"train.learning_rate={rates}",
                "train.epochs=1", *order], store)
    assert done.returncode == 1, done.stderr[-3000:]
    parents, children = parents_and_children(store)
    assert len(parents) == 1 and parents[0].info.status == "FAILED"  # closed, and says so
    by_key = {(c.data.params.get("N"), c.data.params.get("train.learning_rate")): c
              for c in children}
    expected_rates = [str(float(rate)) for rate in rates.split(",")]
    assert len(children) == 2 * len(expected_rates)
    if "0.001" in expected_rates:
        assert by_key[("16", "0.001")].info.status == "FINISHED"
    diverged = by_key[("16", "1000000.0")]
    assert diverged.info.status == "FAILED" and "training diverged" in diverged.data.tags["error"]
    for rate in expected_rates:
        invalid = by_key[("48", rate)]
        assert invalid.info.status == "FAILED" and "N=48" in invalid.data.tags["error"]
    if len(expected_rates) == 2:  # a swept non-axis setting is in the name
        assert "N48_g1_dose1e5_poisson_nll_pinn_s0_train.learning_rate=0.001" in done.stdout
    assert "N=48: N must be an integer power of two >= 16, got 48" in done.stdout
    failed = len(children) - ("0.001" in expected_rates)
    assert f"{failed} of {len(children)} jobs failed" in done.stderr
    assert "report: " in done.stdout  # the report ran whatever the callbacks' order
    logged = {a.path for a in client(store).list_artifacts(parents[0].info.run_id)}
    assert {"summary.txt", "report"} <= logged


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "named", "code"), [
    (["N=48"], "N=48: N must be an integer power of two", 2),
    (["dose=abc"], "dose", 1),  # a wrong type: refused by Hydra at composition
])
def test_a_bad_value_on_the_command_line_exits_before_any_work_and_starts_quietly(
    overrides: list[str], named: str, code: int, store: Path
) -> None:
    done = run(["experiment=smoke", *overrides], store, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == code, output[-2000:]
    assert named in output, output[-2000:]
    assert runs(store) == []  # nothing was tracked
    assert "epoch 1/" not in output  # no work was done
    assert not any(banner in output for banner in BANNERS), output[:2000]


@pytest.mark.slow
def test_dry_run_previews_a_twelve_job_sweep_quickly_without_runs(store: Path) -> None:
    start = time.perf_counter()
    done = run(["-m", "experiment=smoke", "dry_run=true", "N=16,32", "gridsize=1,2",
                "dose=1e3,1e4,1e5"], store, timeout=300)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    assert elapsed < 60
    assert done.stderr.count("would run") + done.stdout.count("would run") == 12
    assert "sweep: 12 jobs" in done.stdout
    assert runs(store) == []
