"""Stitching exact ground-truth patches reproduces the object in the scanned interior."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.data import ObjectSpec, ScanSpec, SimulationSpec, group_positions, make_datasets
from ptycho.evaluation import central_size, evaluate, scanned_region, stitch


@pytest.fixture(scope="module")
def test_set():
    """Whole-pixel positions: bilinear extraction is then exact, so stitching can be too."""
    spec = SimulationSpec(N=32, dose=1e4, n_train=8, n_test=300, obj=ObjectSpec(size=96),
                          scan=ScanSpec(subpixel=False))
    return make_datasets(spec).test


@pytest.mark.parametrize("gridsize", [1, 2])
def test_exact_patches_stitch_back_to_the_object(test_set, gridsize: int) -> None:
    groups = group_positions(test_set.positions, gridsize)
    indices = groups.indices.reshape(-1)  # every channel of every group, as evaluation does
    keep = central_size(32, 0.3)
    chunk = 64
    assert len(indices) > chunk  # more patterns than one chunk
    stitched, weight = stitch(test_set.patches[indices], test_set.positions[indices],
                              test_set.obj.shape, keep=keep, chunk_size=chunk)
    rows, cols = scanned_region(weight, border=2)
    covered = weight[rows, cols] > 1e-3
    assert covered.mean() > 0.99  # random scans leave rare pinholes between patches
    assert (rows.stop - rows.start) * (cols.stop - cols.start) > 0.8 * 62**2
    error = np.abs(stitched[rows, cols] - test_set.obj[rows, cols])[covered]
    assert error.max() < 1e-5


def test_chunking_does_not_change_the_result(test_set) -> None:
    args = (test_set.patches, test_set.positions, test_set.obj.shape)
    one, _ = stitch(*args, keep=10, chunk_size=1000)
    many, _ = stitch(*args, keep=10, chunk_size=7)
    np.testing.assert_allclose(many, one, atol=1e-6)


def test_evaluating_the_truth_gives_perfect_scores() -> None:
    spec = SimulationSpec(N=32, dose=1e4, n_train=8, n_test=144, obj=ObjectSpec(size=96),
                          scan=ScanSpec(kind="raster", jitter=0.0, subpixel=False))
    data = make_datasets(spec).test
    result = evaluate(data.patches, data.positions, data.obj)
    m = result.metrics
    assert m["amp_mae"] < 1e-6 and m["phase_mae"] < 1e-6
    assert m["amp_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert m["amp_frc50"] == result.frc["amp"].nyquist
    assert result.extra["coverage"] == 1.0


def test_subpixel_positions_stitch_to_interpolation_accuracy() -> None:
    spec = SimulationSpec(N=32, dose=1e4, n_train=8, n_test=300, obj=ObjectSpec(size=96))
    data = make_datasets(spec).test
    result = evaluate(data.patches, data.positions, data.obj)
    # Bilinear extraction then placement smooths by < a pixel: close, not exact.
    assert result.metrics["amp_mae"] < 0.01
    assert result.metrics["amp_ssim"] > 0.95


def test_stitch_refuses_mismatched_positions(test_set) -> None:
    with pytest.raises(ValueError, match=r"positions must have shape \(300, 2\)"):
        stitch(test_set.patches, test_set.positions[:5], test_set.obj.shape, keep=10)
