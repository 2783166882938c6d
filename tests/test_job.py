"""``run_job`` in-process: outcomes, failure isolation, resume, artifacts, bad values, the store.

The process boundary is not the subject here (``tests/test_run.py`` and ``tests/test_scaling.py``
keep the CLI, signal and launcher tests), so each job runs in this process on a temporary store.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ptycho import runtime
from ptycho.config import validate
from ptycho.evaluation import METRIC_KEYS
from ptycho.runner.job import open_tracker, run_job
from ptycho.runner.outcome import JobContext
from ptycho.runner.signals import Terminated
from ptycho.runner.tracking import Tracker, host_tags, resolve_store
from tests.test_config import composed

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = {"config.yaml", "metrics.json", "reconstruction.npz", "figures", "model"}
FIGURES = {"figures/reconstruction.png", "figures/diffraction.png",
           "figures/training_curves.png", "figures/frc.png"}


def smoke(store: Path, *overrides: str):
    """The smoke experiment on ``store`` (SQLite file, artifacts and dataset cache inside)."""
    return composed("experiment=smoke", f"tracking.uri=sqlite:///{store}/mlflow.db",
                    f"data.cache_dir={store}/cache", *overrides)


def context(store: Path, **fields: object) -> JobContext:
    return JobContext(project_root=store, output_dir=store / "job", **fields)  # type: ignore


def client(store: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")


def runs(store: Path, experiment: str = "smoke") -> list:
    found = client(store).get_experiment_by_name(experiment)
    return [] if found is None else client(store).search_runs([found.experiment_id])


@pytest.fixture(scope="module")
def finished(tmp_path_factory, store_template):
    """One smoke job run to the end, shared by the tests that read what it left."""
    store = tmp_path_factory.mktemp("job_store")
    shutil.copy(store_template, store / "mlflow.db")
    job = context(store, overrides=("train.epochs=2",), swept=("train.epochs", "N"))
    outcome = run_job(smoke(store, "train.epochs=2", "tracking.system_metrics_s=1"), job)
    return store, outcome


@pytest.mark.slow
def test_a_job_finishes_with_its_metrics_artifacts_and_then_is_skipped(finished) -> None:
    store, outcome = finished
    assert outcome.status == "FINISHED", outcome.error
    assert outcome.name == "N16_g1_dose1e5_poisson_nll_pinn_s0_train.epochs=2"
    (run,) = runs(store)
    assert run.info.status == "FINISHED" and run.info.run_name == outcome.name
    for key in (*METRIC_KEYS, "measured_dose", "time_compile_s", "time_train_s", "time_eval_s",
                "train_patterns_per_s", "params_count", "predicted_nll_per_photon", "fluence",
                "truth_nll_per_photon", "predicted_nll_excess_per_photon", "object_nll_per_photon",
                "object_nll_excess_per_photon", "wilks_nll_excess_per_photon",
                "fluence_p5", "amp_frc50_nyquist", "amp_frc_halfbit_nyquist",
                "amp_frc_onebit_nyquist", "amp_resolution_px", "amp_contrast", "degenerate",
                "phase_sync_offset_std", "phase_sync_nll_gain_per_photon",
                "overlap_sync_amp_ssim", "overlap_sync_phase_ssim"):
        assert math.isfinite(run.data.metrics[key]), key
        assert run.data.metrics[key] == pytest.approx(outcome.metrics[key])
    mlflow = client(store)
    assert [m.step for m in mlflow.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
    params = run.data.params
    assert params["dose"] == "100000.0" and params["N"] == "16" and params["train.epochs"] == "2"
    assert params["train.jit_compile"] == "auto" and params["data.object.size"] == "48"
    tags = run.data.tags
    for tag in ("config_hash", "git_commit", "version.tensorflow", "devices", "overrides",
                "process_id", "host"):
        assert tags.get(tag), tag
    assert tags["xla"] == ("true" if runtime.gpu_available() else "false")  # jit_compile: auto
    assert tags["swept"] == '{"train.epochs": "2"}'
    assert tags["degenerate"] == ("true" if run.data.metrics["degenerate"] else "false")
    assert tags["arm"] == "N16 g1 poisson_nll pinn"  # the report's label: the UI groups by it
    assert tags["tuning"] == "tuned"  # lines, seed 0: data the settings were chosen on
    # the dose-response axis of the UI's line charts: the headline metrics at step = dose
    (point,) = mlflow.get_metric_history(run.info.run_id, "vs_dose/amp_ssim")
    assert point.step == 100000 and point.value == pytest.approx(run.data.metrics["amp_ssim"])
    # what the run saw, in the UI's Dataset column: the cached simulation, by its cache key
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "evaluation"}
    entries = [entry.name for entry in (store / "cache").iterdir() if entry.is_dir()]
    assert inputs["training"].digest in entries
    assert inputs["training"].source == str(store / "cache" / inputs["training"].digest)
    # and what it ran on: MLflow's system metrics (CPU, memory)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(
        run.data.metrics), sorted(run.data.metrics)
    assert ARTIFACTS <= {a.path for a in mlflow.list_artifacts(run.info.run_id)}
    figures = mlflow.list_artifacts(run.info.run_id, "figures")
    assert {a.path for a in figures} == FIGURES and all(a.file_size > 5000 for a in figures)
    (store / "download").mkdir()
    with np.load(mlflow.download_artifacts(run.info.run_id, "reconstruction.npz",
                                           str(store / "download"))) as stored:
        assert stored["probe"].shape == (16, 16) and stored["probe"].dtype == np.complex64

    job = context(store, overrides=("train.epochs=2",), swept=("train.epochs",))
    again = run_job(smoke(store, "train.epochs=2"), job)
    assert again.status == "SKIPPED" and again.run_id == outcome.run_id
    assert again.metrics["amp_ssim"] == pytest.approx(outcome.metrics["amp_ssim"])
    assert len(runs(store)) == 1


@pytest.mark.slow
def test_failing_jobs_fail_their_runs_with_the_error_and_the_next_job_runs(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failed = run_job(smoke(store, "train.learning_rate=1e6", "train.epochs=1"),
                     context(store))
    assert failed.status == "FAILED" and "training diverged" in failed.error
    (run,) = runs(store)
    assert run.info.status == "FAILED" and "training diverged" in run.data.tags["error"]
    assert run.data.tags["status_reason"] == "failed"
    assert "traceback.txt" in {a.path for a in client(store).list_artifacts(run.info.run_id)}
    # an unwritable artifact folder fails only its own job, clearly, and keeps the metrics
    blocker = store / "file"
    blocker.write_text("not a folder")
    broken = run_job(smoke(store, "train.epochs=1", "eval.n_diffraction=2",
                           f"tracking.artifact_location={blocker}/artifacts",
                           "tracking.experiment=broken"), context(store))
    assert broken.status == "FAILED" and "could not write this run's artifacts" in broken.error
    (kept,) = runs(store, "broken")
    assert kept.info.status == "FAILED" and "Not a directory" in kept.data.tags["error"]
    assert set(METRIC_KEYS) <= set(kept.data.metrics)  # the metrics were kept
    # the store and the dataset cache still serve the next job, which succeeds from the cache
    with caplog.at_level(logging.INFO, logger="ptycho.pipeline"):
        good = run_job(smoke(store, "train.epochs=1", "eval.n_diffraction=2"), context(store))
    assert good.status == "FINISHED", good.error
    assert "(cache hit)" in caplog.text
    assert not [p.name for p in (store / "cache").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("N=48", "N=48: N must be an integer power of two"),
        ("dose=1e30", "dose=1e+30: must be <= 1e+15"),
        ("tracking.uri=ftp://nowhere/x", "unsupported tracking URI scheme 'ftp'"),
        ("train.epochs=-1", "train.epochs=-1"),
    ],
)
def test_bad_values_are_invalid_before_any_work(store: Path, override: str,
                                                message: str) -> None:
    cfg = smoke(store, override) if "tracking" not in override else composed(
        "experiment=smoke", override)
    outcome = run_job(cfg, context(store))
    assert outcome.status == "INVALID" and message in outcome.error
    assert runs(store) == []
    assert not (store / "cache").exists()  # nothing was simulated


def test_an_invalid_job_of_a_sweep_is_recorded_as_a_failed_child(store: Path) -> None:
    outcome = run_job(smoke(store, "N=48"), context(store, sweep=True))
    assert outcome.status == "FAILED"
    (run,) = runs(store)
    assert run.info.status == "FAILED" and "N=48" in run.data.tags["error"]


@pytest.mark.parametrize("method", ["ensure_experiment", "find_running", "find_finished",
                                    "create_run"])
def test_an_unreachable_store_fails_the_job_without_raising(
    store: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    def locked(*args: object, **kwargs: object) -> None:
        raise MlflowException("(sqlite3.OperationalError) database is locked")

    monkeypatch.setattr(Tracker, method, locked)
    outcome = run_job(smoke(store, "train.epochs=1"), context(store))
    assert outcome.status == "FAILED" and "database is locked" in outcome.error
    assert outcome.name.startswith("N16_g1_dose1e5")


def test_a_killed_job_closes_its_run_killed_reports_it_and_reraises(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    import ptycho.pipeline

    def interrupted(*args: object, **kwargs: object) -> None:
        raise Terminated(signal.SIGTERM)

    monkeypatch.setattr(ptycho.pipeline, "run_pipeline", interrupted)
    reported = []
    with pytest.raises(Terminated):
        run_job(smoke(store), context(store), on_killed=reported.append)
    (run,) = runs(store)
    assert run.info.status == "KILLED" and run.data.tags["error"] == "terminated by SIGTERM"
    assert [o.status for o in reported] == ["KILLED"]


def _running_run(store: Path, config_hash: str, **tags: str) -> str:
    tracker, _ = open_tracker(f"sqlite:///{store}/mlflow.db", None, store)
    experiment_id = tracker.ensure_experiment("smoke")
    return tracker.create_run(experiment_id, "left", tags={"config_hash": config_hash, **tags})


def test_a_run_left_by_a_dead_process_is_stale_and_a_live_one_is_elsewhere(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = smoke(store, "dry_run=false")
    config_hash = validate(cfg).config_hash
    alive = _running_run(store, config_hash, **host_tags())
    outcome = run_job(cfg, context(store))
    assert outcome.status == "ELSEWHERE" and outcome.run_id == alive and not outcome.ok
    client(store).set_terminated(alive, "FINISHED")
    client(store).delete_run(alive)

    dead = _running_run(store, config_hash, host=host_tags()["host"], process_id="999999",
                        process_start="1")

    import ptycho.pipeline

    def stop_here(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the job ran")

    monkeypatch.setattr(ptycho.pipeline, "run_pipeline", stop_here)
    outcome = run_job(cfg, context(store))
    assert outcome.status == "FAILED" and "the job ran" in outcome.error
    stale = client(store).get_run(dead)
    assert stale.info.status == "FAILED" and stale.data.tags["status_reason"] == "stale"


def test_swept_settings_that_are_not_axes_are_in_the_run_name(store: Path) -> None:
    names = set()
    for epochs in ("2", "40"):
        job = context(store, overrides=("N=16", f"train.epochs={epochs}", "dose=1e5"),
                      swept=("train.epochs", "N"))
        outcome = run_job(smoke(store, f"train.epochs={epochs}", "dry_run=true"), job)
        assert outcome.status == "DRY_RUN"
        names.add(outcome.name)
    assert names == {"N16_g1_dose1e5_poisson_nll_pinn_s0_train.epochs=2",
                     "N16_g1_dose1e5_poisson_nll_pinn_s0_train.epochs=40"}


def test_the_store_comes_from_the_config_then_the_environment_then_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri, artifacts, source = resolve_store(None, None, tmp_path)
    assert (uri, source) == (f"sqlite:///{tmp_path}/outputs/mlflow.db", "project")
    assert artifacts == (tmp_path / "outputs" / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/team/mlflow.db")
    uri, artifacts, source = resolve_store(None, None, tmp_path)
    assert (uri, source) == (f"sqlite:///{tmp_path}/team/mlflow.db", "MLFLOW_TRACKING_URI")
    assert artifacts == (tmp_path / "team" / "mlartifacts").as_uri()  # beside the database
    uri, _, source = resolve_store(f"sqlite:///{tmp_path}/mine.db", None, tmp_path)
    assert (uri, source) == (f"sqlite:///{tmp_path}/mine.db", "config")
    # a whole job follows the variable when tracking.uri is not set
    outcome = run_job(composed("experiment=smoke", "N=48"), context(tmp_path, sweep=True))
    assert outcome.status == "FAILED"
    team = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/team/mlflow.db")
    assert team.get_experiment_by_name("smoke") is not None
    assert not (tmp_path / "outputs" / "mlflow.db").exists()
    assert os.environ["MLFLOW_TRACKING_URI"].endswith("team/mlflow.db")


@pytest.mark.slow
def test_a_whole_job_runs_without_tracking_or_hydra(tmp_path: Path) -> None:
    from ptycho.pipeline import run_pipeline

    config = validate({"N": 16, "dose": 1e5, "data": {"n_train": 48,
                                                      "object": {"size": 48}},
                       "train": {"epochs": 1, "batch_size": 8},
                       "eval": {"keep_fraction": 0.5, "border": 2}})
    result = run_pipeline(config)
    assert set(METRIC_KEYS) <= set(result.metrics)
    m = result.metrics
    # one epoch of a 16-pixel network is far from the likelihood's optimum: it is training-limited
    assert m["predicted_nll_excess_per_photon"] == pytest.approx(
        m["predicted_nll_per_photon"] - m["truth_nll_per_photon"])
    assert m["predicted_nll_excess_per_photon"] > 0
    assert result.evaluation.amplitude.shape == result.evaluation.amplitude_truth.shape
    measured, expected = result.diffraction
    assert measured.shape == expected.shape == (4, 16, 16)
    assert not result.cache_hit


def test_the_nll_excess_says_whether_a_fit_reached_what_the_photons_allow() -> None:
    from ptycho.pipeline import nll_excess

    rng = np.random.default_rng(0)
    truth = rng.uniform(0.5, 50.0, (64, 16, 16)).astype(np.float32)
    counts = rng.poisson(truth).astype(np.float32)
    at_truth = nll_excess(counts, truth, truth)
    assert at_truth["predicted_nll_excess_per_photon"] == 0.0
    assert at_truth["predicted_nll_per_photon"] == at_truth["truth_nll_per_photon"] > 0
    # a model with relative errors ε in its expected counts explains the counts worse than the
    # truth does, by about E[ε²]/2 nats per photon (here ε uniform in ±20%: 0.4²/12/2 = 0.0067)
    off = truth * rng.uniform(0.8, 1.2, truth.shape).astype(np.float32)
    assert nll_excess(counts, off, truth)["predicted_nll_excess_per_photon"] == pytest.approx(
        0.4**2 / 12 / 2, rel=0.15)
    # a fit with more freedom than the truth absorbs noise: negative excess
    overfit = 0.5 * truth + 0.5 * np.maximum(counts, 0.1)
    assert nll_excess(counts, overfit, truth)["predicted_nll_excess_per_photon"] < 0


def test_the_scored_objects_nll_is_the_predicted_one_on_a_perfect_reconstruction() -> None:
    """Every arm's object goes through one forward model, scaled to the job's dose: the true
    object (at any amplitude scale and global phase) gives the truth's NLL exactly, the same
    number as the per-group counts of a perfect network; a blurred object does worse. The
    Wilks reference is −(2 × lit pixels)/(2 Σk), the gain a saturated maximum-likelihood fit
    makes on noise (checked on a toy: one free λ per pixel)."""
    from ptycho import physics
    from ptycho.pipeline import nll_excess, object_fit, simulation_spec

    config = validate({"N": 16, "dose": 1e4, "data": {"object": {"size": 40}, "n_train": 32,
                                                      "cache": False}})
    from ptycho.data import make_datasets

    scan = make_datasets(simulation_spec(config)).test
    operator = physics.Ptychography(scan.probe, scan.positions, scan.obj.shape)
    intensities = operator.intensities(scan.obj)
    truth = physics.expected_counts(intensities, physics.dose_scale(intensities, 1e4)).numpy()
    perfect = object_fit(operator, 3.0 * np.exp(0.7j) * scan.obj, scan.counts, 1e4, truth)
    per_group = nll_excess(scan.counts, truth, truth)
    assert perfect["object_nll_per_photon"] == pytest.approx(
        per_group["predicted_nll_per_photon"], rel=1e-6)
    assert abs(perfect["object_nll_excess_per_photon"]) < 1e-6
    light = operator.illumination()
    lit = int(np.count_nonzero(light > 1e-6 * light.max()))
    assert perfect["wilks_nll_excess_per_photon"] == pytest.approx(-lit / scan.counts.sum())
    blurred = 0.5 * (scan.obj + np.roll(scan.obj, 1, axis=1))
    assert object_fit(operator, blurred, scan.counts, 1e4, truth)[
        "object_nll_excess_per_photon"] > 1e-4
    rng = np.random.default_rng(1)
    lam = np.full(20_000, 50.0)
    counts = rng.poisson(lam).astype(np.float64)
    saturated = nll_excess(counts, counts, lam, name="fit")["fit_nll_excess_per_photon"]
    assert saturated == pytest.approx(-lam.size / (2 * counts.sum()), rel=0.1)


def test_a_job_under_a_beamlines_conditions_logs_its_errors_and_figures(store: Path) -> None:
    """condition=all refine=on: the position and probe errors (given and refined) are logged as
    metrics, the condition and refinement as tags, the probes, positions and their figures as
    artifacts; the position errors are seeded (the same job gives the same errors)."""
    overrides = ("condition=all", "refine=on", "train.epochs=2",
                 "data.probe_guess.defocus_error=1.5")
    job = context(store, overrides=overrides)
    outcome = run_job(smoke(store, *overrides), job)
    assert outcome.status == "FINISHED", outcome.error
    (run,) = runs(store)
    metrics, tags = run.data.metrics, run.data.tags
    assert tags["condition"] == "probe perturbed + positions off + detector"
    assert tags["refinement"] == "refined probe"  # the PINN has no position refinement
    assert tags["arm"].endswith("· probe perturbed + positions off + detector · refined probe")
    assert 0.2 < metrics["position_error_given_rms"] < 1.5  # σ = 0.5 px per axis, and more
    assert metrics["position_error_rms"] == metrics["position_error_given_rms"]
    assert 0.05 < metrics["probe_error_given"] < 1 and metrics["probe_error"] > 0
    figures = {a.path for a in client(store).list_artifacts(run.info.run_id, "figures")}
    assert {"figures/probe.png", "figures/positions.png"} <= figures
    path = client(store).download_artifacts(run.info.run_id, "reconstruction.npz", str(store))
    with np.load(path) as saved:
        true, given = saved["positions_true"], saved["positions_given"]
        assert {"probe_true", "probe_given", "probe_refined"} <= set(saved.files)
    again = run_job(smoke(store, *overrides, "resume=false"), context(store, overrides=overrides))
    assert again.metrics["position_error_given_rms"] == metrics["position_error_given_rms"]
    assert not np.allclose(true, given)
