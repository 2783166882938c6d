"""rPIE, the arm added by its module, its settings class and its YAML alone: a tracked job like
the other pty-chi arms, named and hashed by what it uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from ptycho.config import ConfigError, validate
from ptycho.evaluation import METRIC_KEYS
from ptycho.runner.job import run_job
from tests.test_job import context, smoke


def test_an_rpie_job_is_tracked_like_the_other_arms(store: Path) -> None:
    outcome = run_job(smoke(store, "model=rpie", "model.iterations=4", "data.n_train=48"),
                      context(store))
    assert outcome.status == "FINISHED", outcome.error
    assert outcome.name == "N16_dose1e5_rpie_s0"
    record = MlflowClient(f"sqlite:///{store}/mlflow.db").get_run(outcome.run_id)
    metrics, tags, params = record.data.metrics, record.data.tags, record.data.params
    for key in (*METRIC_KEYS, "predicted_nll_per_photon", "predicted_nll_excess_per_photon"):
        assert np.isfinite(metrics[key]), key
    assert metrics["iterations_run"] == 4 and metrics["patterns_reconstructed"] == 48
    assert tags["arm"] == "N16 rpie" and tags["training_loss"] == "rpie"
    assert tags["unused"].startswith("gridsize, loss, train")
    assert params["model.alpha"] == "0.1" and "model.bottleneck_filters" not in params
    curve = MlflowClient(f"sqlite:///{store}/mlflow.db").get_metric_history(
        outcome.run_id, "nll_per_photon")
    assert [point.step for point in curve] == [1, 2, 3, 4]
    assert curve[-1].value < curve[0].value  # the data error falls


def test_rpie_settings_are_its_own_and_checked_by_name() -> None:
    config = validate({"model": {"kind": "rpie", "alpha": 0.25}, "gridsize": 2})
    assert config.model.alpha == 0.25 and config.unused[:3] == ("gridsize", "loss", "train")
    assert config.config_hash == validate({"model": {"kind": "rpie", "alpha": 0.25}}).config_hash
    with pytest.raises(ConfigError, match=r"model\.alpha=1\.5: must be <= 1"):
        validate({"model": {"kind": "rpie", "alpha": 1.5}})
