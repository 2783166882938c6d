"""A measured scan through the study machinery: the export's round trip reproduces the
simulated job, a scan without its truth is scored without it (truth metrics absent, not zero),
and a tracked job logs its file as a dataset with its digest (docs/physics.md §13)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ptycho.config import validate
from ptycho.data.cxi import read_cxi, write_cxi
from ptycho.evaluation import METRIC_KEYS
from ptycho.export import main as export
from ptycho.pipeline import run_pipeline
from ptycho.runner.job import run_job
from tests.test_job import client, context, runs, smoke

ENGINE = {"kind": "lsqml", "iterations": 4}
TIMES = ("time_", "patterns_per_s")


def test_a_simulated_scan_exported_and_studied_as_measured_gives_the_same_job(
        tmp_path: Path) -> None:
    """simulate → CXI (``python -m ptycho.export``) → load: the same counts, positions, probe
    and truth, so the same reconstruction and every metric equal (timings aside)."""
    path = tmp_path / "scan.cxi"
    overrides = ["experiment=smoke", "N=16", "seed=3", f"data.cache_dir={tmp_path}/cache"]
    assert export([*overrides, "--out", str(path)]) == 0
    simulated = validate({"N": 16, "seed": 3, "dose": 1e5,
                          "data": {"n_train": 48, "object": {"size": 48}}, "model": ENGINE,
                          "eval": {"keep_fraction": 0.5, "border": 2}})
    measured = validate({**simulated.resolved(), "data": {"source": "file", "path": str(path)},
                         "eval": {"keep_fraction": 0.5, "border": 2, "truth_free": "off"}})
    assert measured.data.n_train == 48 and measured.condition == "measured"
    first = run_pipeline(simulated, cache_dir=tmp_path / "cache")
    second = run_pipeline(measured, cache_dir=tmp_path / "cache")
    differ = {key for key in first.metrics if not key.startswith(TIMES)
              and first.metrics[key] != second.metrics.get(key)}
    assert differ == set()
    assert second.metrics["thinning_fraction"] == 1.0
    np.testing.assert_array_equal(first.evaluation.reconstruction,
                                  second.evaluation.reconstruction)


def test_a_scan_without_its_truth_is_scored_without_it(tmp_path: Path) -> None:
    """Truth metrics are absent (not zero); the half-split FRC and the agreement with the
    full-dose LSQML reference are there, and the figures compare with the reference."""
    path = tmp_path / "scan.cxi"
    assert export(["experiment=smoke", "N=16", "dose=1e5", "data.n_train=96",
                   f"data.cache_dir={tmp_path}/cache", "--out", str(path)]) == 0
    write_cxi(path, replace(read_cxi(path), truth=None))
    config = validate({"N": 16, "dose": 1e4, "model": {"kind": "lsqml", "iterations": 10},
                       "data": {"source": "file", "path": str(path)},
                       "eval": {"keep_fraction": 0.5, "border": 2}})
    assert config.eval.truth_free == "on"  # auto: on for measured data
    result = run_pipeline(config, cache_dir=tmp_path / "cache")
    metrics = result.metrics
    assert not set(METRIC_KEYS) & set(metrics)
    assert "probe_error" not in metrics and "amp_mse_crb" not in metrics
    for key in ("halfsplit_amp_frc_halfbit", "halfsplit_phase_frc_halfbit", "ref_amp_ssim",
                "ref_phase_frc50", "object_nll_per_photon"):
        assert np.isfinite(metrics[key]), key
    assert 0 < metrics["halfsplit_amp_frc_halfbit"] <= 1
    assert metrics["reference_dose"] == pytest.approx(1e5, rel=0.01)
    assert metrics["thinning_fraction"] == pytest.approx(1e-1, rel=0.02)
    assert metrics["measured_dose"] == pytest.approx(1e4, rel=0.05)
    assert result.evaluation.reference_name.startswith("reference (lsqml at")
    # the reference is computed once per scan: a second dose reuses it
    again = run_pipeline(replace(config, dose=1e5), cache_dir=tmp_path / "cache")
    assert again.metrics["time_reference_s"] == 0.0
    assert again.metrics["ref_amp_ssim"] > metrics["ref_amp_ssim"]  # more photons, closer
    other_seed = replace(config, data=replace(config.data, noise_seed=1))  # another thinning
    thinned = run_pipeline(other_seed, cache_dir=tmp_path / "cache")
    assert thinned.metrics["time_reference_s"] == 0.0  # the same full-dose reference
    assert thinned.metrics["halfsplit_amp_frc_halfbit"] != metrics["halfsplit_amp_frc_halfbit"]


def test_a_tracked_job_on_a_measured_scan_logs_its_file_and_the_pinns_halves(
        store: Path) -> None:
    """The PINN on a measured scan (truth-free on): the run's dataset names the file and its
    sha256, the tags say measured, the truth metrics are absent, the halves' FRC logged."""
    path = store / "scan.cxi"
    assert export(["experiment=smoke", "data.n_train=96", f"data.cache_dir={store}/cache",
                   "--out", str(path)]) == 0
    write_cxi(path, replace(read_cxi(path), truth=None))
    overrides = ("data.source=file", f"data.path={path}", "dose=1e4", "train.batch_size=4",
                 "eval.reference=lsqml")
    outcome = run_job(smoke(store, *overrides), context(store, overrides=overrides))
    assert outcome.status == "FINISHED", outcome.error
    (run,) = runs(store)
    metrics, tags = run.data.metrics, run.data.tags
    assert tags["condition"] == "measured" and tags["tuning"] == "measured"
    assert " measured scan.cxi [" in tags["arm"]
    assert "amp_ssim" not in metrics and np.isfinite(metrics["halfsplit_amp_frc_halfbit"])
    (dataset, *_) = run.inputs.dataset_inputs
    digest = validate(smoke(store, *overrides)).data.digest
    assert digest in dataset.dataset.source and dataset.dataset.name.startswith("scan-N16")
    figures = {a.path for a in client(store).list_artifacts(run.info.run_id, "figures")}
    assert "figures/reconstruction.png" in figures


def test_a_measured_file_that_cannot_serve_the_job_makes_it_invalid_before_any_run(
        store: Path) -> None:
    """Read in full before any run (a dry run too): a dose above the file's is INVALID, as is
    a frame smaller than N, and no run is created."""
    path = store / "scan.cxi"
    assert export(["experiment=smoke", f"data.cache_dir={store}/cache", "--out",
                   str(path)]) == 0
    for overrides, message in (
            (("dose=1e9",), "dose=1e+09 is above the scan's measured dose of"),
            (("N=32", "dry_run=true"), "frames of 16 x 16 pixels binned by 1 are 16 x 16, "
                                       "smaller than N=32")):
        overrides = ("data.source=file", f"data.path={path}", *overrides)
        outcome = run_job(smoke(store, *overrides), context(store, overrides=overrides))
        assert outcome.status == "INVALID" and message in outcome.error, outcome.error
        assert outcome.error.startswith("data.path")  # the file, named once
    assert runs(store) == []


def test_simulated_data_log_the_truth_free_scores_beside_the_truths(tmp_path: Path) -> None:
    """eval.truth_free=on on a simulation: the truth metrics and the truth-free ones side by
    side, the reference simulated at eval.reference_dose from the same object and scan."""
    config = validate({"N": 16, "dose": 1e4, "seed": 1, "model": ENGINE,
                       "data": {"n_train": 96, "object": {"size": 48}},
                       "eval": {"keep_fraction": 0.5, "border": 2, "truth_free": "on",
                                "reference_dose": 1e6}})
    metrics = run_pipeline(config, cache_dir=tmp_path / "cache").metrics
    assert set(METRIC_KEYS) <= set(metrics)
    assert metrics["reference_dose"] == 1e6 and "thinning_fraction" not in metrics
    assert 0 < metrics["halfsplit_amp_frc_halfbit"] <= 1
    assert abs(metrics["ref_amp_ssim"] - metrics["amp_ssim"]) < 0.1  # the reference is close
