"""LSQML with a total-variation prior: an arm of its own (module, settings, YAML), tracked like
the others; its prior changes the object and, at a low dose, lowers the held-out NLL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from ptycho.arms import ArmInput, arm
from ptycho.config import ConfigError, validate
from ptycho.data import make_datasets
from ptycho.pipeline import simulation_spec
from ptycho.runner.job import run_job
from tests.test_job import context, smoke


def test_an_lsqml_tv_job_is_tracked_like_the_other_arms(store: Path) -> None:
    outcome = run_job(smoke(store, "model=lsqml_tv", "model.iterations=3", "data.n_train=48"),
                      context(store))
    assert outcome.status == "FINISHED", outcome.error
    assert outcome.name == "N16_dose1e5_lsqml_tv_s0"
    record = MlflowClient(f"sqlite:///{store}/mlflow.db").get_run(outcome.run_id)
    assert record.data.tags["arm"] == "N16 lsqml_tv"
    assert record.data.tags["training_loss"] == "lsqml_poisson_tv"
    assert record.data.params["model.tv_weight"] == "0.01"
    assert np.isfinite(record.data.metrics["amp_ssim"])


def test_the_prior_smooths_and_the_heldout_nll_can_judge_it() -> None:
    """At 1e2 photons the same LSQML run with and without the TV projection: the projection
    changes the object (it acts), and the held-out NLL of a strong weight is lower than of a
    tiny one on this scan (the data-only criterion sees the prior help)."""
    pair = make_datasets(simulation_spec(validate({"N": 16, "dose": 1e2, "data": {
        "object": {"size": 48}, "n_train": 64}})))
    scan = pair.test.scan

    def run(weight: float):
        job = validate({"N": 16, "dose": 1e2, "data": {"object": {"size": 48}},
                        "model": {"kind": "lsqml_tv", "tv_weight": weight, "iterations": 12,
                                  "stopping": "heldout", "patience": 3}})
        return arm("lsqml_tv").reconstruct(ArmInput(scan, scan), job, None)

    weak, strong = run(1e-4), run(0.3)
    assert not np.array_equal(weak.obj, strong.obj)
    assert (strong.metrics["heldout_nll_per_photon_best"]
            < weak.metrics["heldout_nll_per_photon_best"])
    with pytest.raises(ConfigError, match=r"model\.tv_weight=0\.0: must be > 0"):
        validate({"model": {"kind": "lsqml_tv", "tv_weight": 0.0}})
