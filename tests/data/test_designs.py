"""The study designs' data: validation held out by region (no pattern in a training and a
validation group), test groups shaped like training groups (Kolmogorov–Smirnov on spread), and
no held-out region when `train.validation_fraction=0`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ks_2samp

from ptycho.arms.network import training_groups
from ptycho.config import ObjectConfig, validate
from ptycho.data import (
    check_matched_groups,
    group_positions,
    group_reach,
    holdout_region,
    make_datasets,
    make_positions,
    raster_positions,
)
from ptycho.pipeline import run_pipeline
from tests.helpers import simulation_spec
from tests.test_config import composed


def test_the_held_out_region_is_a_compact_square_of_the_scan() -> None:
    positions = raster_positions(400, (96, 96), 32, seed=0, jitter=1.0)
    train, validation = holdout_region(positions, 20, seed=3)
    assert len(validation) == 20 and len(train) == 380
    assert not np.intersect1d(train, validation).size
    np.testing.assert_array_equal(np.sort(np.concatenate([train, validation])), np.arange(400))
    held = positions[validation]
    # ~20 points of a 3-px raster: a ~5x5 block, so about 4 steps across
    assert np.ptp(held, axis=0).max() < 5 * 3.2 + 2
    again = holdout_region(positions, 20, seed=3)
    np.testing.assert_array_equal(again[1], validation)
    assert not np.array_equal(holdout_region(positions, 20, seed=4)[1], validation)
    with pytest.raises(ValueError, match=r"count must be an integer in \[0, 400\), got 400"):
        holdout_region(positions, 400, seed=0)


@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_no_pattern_is_in_a_training_and_a_validation_group(gridsize: int) -> None:
    positions = raster_positions(256, (96, 96), 32, seed=1, jitter=1.0)
    split = training_groups(positions, gridsize, 0.1, seed=0)
    indices = split.groups.indices
    is_validation = np.zeros(len(indices), bool)
    is_validation[split.validation] = True
    trained, validated = np.unique(indices[~is_validation]), np.unique(indices[is_validation])
    assert not np.intersect1d(trained, validated).size
    np.testing.assert_array_equal(validated, split.validation_patterns)
    assert len(split.validation_patterns) == 26 and len(split.validation) == 26
    assert len(trained) == 256 - 26  # every other pattern trains
    # Validation groups are built like training groups: compact, not stretched across the gap.
    if gridsize > 1:
        reach = group_reach(split.groups)
        assert np.median(reach[is_validation]) <= 1.5 * np.median(reach[~is_validation])
    none = training_groups(positions, gridsize, 0.0, seed=0)
    assert len(none.validation) == 0 and len(none.groups) == 256


@pytest.mark.parametrize("design", ["reconstruct", "generalize"])
def test_test_groups_are_distributed_like_training_groups(design: str) -> None:
    """The spread of a group (largest distance between two members) has the same distribution
    in the scored scan as in training: the two-sample Kolmogorov–Smirnov distance is small.
    (Its p-value is not used: groups share patterns, so they are not independent draws and the
    p-value of two independent jitters of one raster ranges over 0.02-0.3, measured.) The
    wave-1 test scan (a quarter of the positions over the same area) is far from it."""
    spec = simulation_spec(N=32, dose=1e4, n_train=512, design=design,
                           obj=ObjectConfig(size=96))
    pair = make_datasets(spec)
    split = training_groups(pair.train.positions, 2, 0.05, seed=0)
    train_reach = group_reach(split.groups)
    test_groups = group_positions(pair.test.positions, 2, seed=0)
    result = ks_2samp(train_reach, group_reach(test_groups))
    assert result.statistic < 0.15, result
    check_matched_groups(split.groups, test_groups, what="test groups")

    sparse = make_positions(spec.scan, 144, (96, 96), 32, seed=7)  # wave 1's quickstart test scan
    wide = group_positions(sparse, 2, seed=0)
    assert ks_2samp(train_reach, group_reach(wide)).statistic > 0.5
    with pytest.raises(ValueError, match=r"test groups: groups spread \d+\.\d\d px \(median\), "
                                         r"training groups \d\.\d\d px"):
        check_matched_groups(split.groups, wide, what="test groups")


def test_without_validation_every_pattern_trains_and_the_schedule_watches_the_training_loss(
    tmp_path: Path,
) -> None:
    """``train.validation_fraction=0`` (the ``paper`` preset at 1e9): no region is held out, so
    every scored pattern is one the network trained on, and the plateau rule and early stopping
    watch the training loss (a small held-out region's loss stalled g=2's schedule at paper
    scale, README)."""
    config = validate(composed("experiment=smoke", "gridsize=2", "train.validation_fraction=0",
                               "train.epochs=2", "tracking.log_model=false"))
    result = run_pipeline(config, cache_dir=tmp_path)
    assert result.metrics["validation_patterns"] == 0 and result.metrics["validation_groups"] == 0
    history = result.history
    assert "val_loss" not in history and len(history["loss"]) == result.metrics["epochs_run"] == 2
    assert result.metrics["val_loss_best"] == min(history["loss"])
    assert result.metrics["best_epoch"] == int(np.argmin(history["loss"])) + 1
