"""``hydra/sweeper=optuna`` (hydra_plugins/ptycho_sweepers): the search space from Hydra's override
grammar, failed trials, and a search end to end — trials as child runs of one parent, the best
line printed and logged, the study persisted and resumed, trials launched two at a time."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
import yaml

from hydra_plugins.ptycho_sweepers.optuna_sweeper import OptunaSweeper, search_space
from ptycho.config import SEARCH_OBJECTIVES
from tests.cli import parents_and_children, run


def test_the_search_space_reads_hydras_sweep_grammar() -> None:
    space, fixed = search_space(
        {"train.learning_rate": "tag(log, interval(1e-4, 1e-2))", "train.batch_size": "8,16",
         "model.bottleneck_filters": "range(32, 129, 32)", "train.epochs": "3"},
        ["experiment=smoke", "loss=poisson_nll,mae", "train.batch_size=choice(4, 8)"])
    by_key = {item.key: item for item in space}
    rate = by_key["train.learning_rate"].distribution()
    assert isinstance(rate, optuna.distributions.FloatDistribution)
    assert rate.log and (rate.low, rate.high) == (1e-4, 1e-2)
    assert by_key["train.batch_size"].choices == (4, 8)  # the command line wins
    width = by_key["model.bottleneck_filters"].distribution()
    assert isinstance(width, optuna.distributions.IntDistribution)
    assert (width.low, width.high, width.step) == (32, 128, 32)
    assert by_key["loss"].choices == ("poisson_nll", "mae")
    assert fixed == ["train.epochs=3", "experiment=smoke"]
    with pytest.raises(ValueError, match=r"train\.learning_rate=tag\(log, interval\(0, 1\)\): an "
                                         r"interval needs low < high \(and low > 0"):
        search_space({"train.learning_rate": "tag(log, interval(0, 1))"}, [])


def test_failed_or_empty_trials_are_failed_not_scored() -> None:
    class Raised:
        @property
        def return_value(self) -> float:
            raise RuntimeError("the job failed")

    class Returned:
        def __init__(self, value: object) -> None:
            self.return_value = value

    sweeper = OptunaSweeper()
    assert sweeper._objective(Raised()) is None
    assert sweeper._objective(Returned(None)) is None
    assert sweeper._objective(Returned(float("nan"))) is None
    assert sweeper._objective(Returned(-7.5)) == -7.5
    with pytest.raises(ValueError,
                       match=r"hydra\.sweeper\.n_trials must be an integer >= 1, got 0"):
        OptunaSweeper(n_trials=0)


def test_a_search_optimises_what_the_data_say_never_a_truth_metric() -> None:
    """The objective is data-only: the networks' validation loss or an engine's held-out
    NLL; any metric scored against the truth (SSIM, FRC, MSE, the bound) is refused."""
    for metric in SEARCH_OBJECTIVES:
        assert OptunaSweeper(metric=metric).metric == metric
    for truth in ("amp_ssim", "amp_frc50", "phase_mse", "amp_crb_efficiency",
                  "object_nll_excess_per_photon"):
        with pytest.raises(ValueError, match=f"metric='{truth}': a search may optimise only"):
            OptunaSweeper(metric=truth)


@pytest.mark.slow
def test_a_search_runs_persists_and_resumes_two_trials_at_a_time(store: Path) -> None:
    storage = f"sqlite:///{store}/optuna.db"
    search = ["-m", "hydra/sweeper=optuna", "experiment=smoke", f"hydra.sweeper.storage={storage}",
              "hydra.sweeper.study_name=test", "train.learning_rate=tag(log,interval(1e-4,1e-2))",
              "model.bottleneck_filters=choice(32,64)", "eval.n_diffraction=1"]
    first = run([*search, "hydra.sweeper.n_trials=2"], store)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "0 trials complete, 2 to run" in first.stdout
    best = re.search(r"optuna best: (.+)", first.stdout).group(1)
    assert best.startswith("train.learning_rate=") and "model.bottleneck_filters=" in best
    parents, children = parents_and_children(store)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.data.tags["best_overrides"] == best
    assert "best.train.learning_rate" in parent.data.params
    assert parent.data.metrics["best_value"] == min(
        child.data.metrics["val_loss_best"] for child in children)
    folder = Path(parent.data.tags["sweep.dir"])
    assert yaml.safe_load((folder / "optuna_best.yaml").read_text())["override_line"] == best

    # The same search again, asked for 4 trials: it resumes (2 new trials, not the first two
    # again) and launches them together on the parallel launcher.
    second = run([*search, "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
                  "hydra/launcher=local_parallel"], store)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 trials complete, 2 to run (2 at a time)" in second.stdout
    assert "launching 2 jobs" in second.stdout + second.stderr
    study = optuna.load_study(study_name="test", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 4  # no repeats
    parents, children = parents_and_children(store)
    assert len(parents) == 2 and len(children) == 4
    assert "SKIPPED" not in second.stdout
