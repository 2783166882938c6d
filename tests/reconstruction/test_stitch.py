"""Stitching exact ground-truth patches reproduces the object in the scanned interior, and the
stitched central part grows with the scan step so that a sparse scan leaves no holes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import Delaunay

from ptycho.data import disc_probe, extract_object_patches, group_positions, raster_positions
from ptycho.evaluation import scanned_region
from ptycho.reconstruction.stitch import (
    central_size,
    check_stitch_geometry,
    largest_gap,
    stitch,
    stitch_size,
)
from tests.helpers import stitch_and_score


def _object(size: int, seed: int) -> np.ndarray:
    """``(size, size)`` complex64: smooth random amplitude in [0.5, 1] and phase in ±π/2."""
    rng = np.random.default_rng(seed)
    fields = [ndimage.gaussian_filter(rng.standard_normal((size, size)), 2.0) for _ in range(2)]
    amplitude, phase = ((f - f.min()) / (f.max() - f.min()) for f in fields)
    return ((0.5 + 0.5 * amplitude) * np.exp(1j * np.pi * (phase - 0.5))).astype(np.complex64)


def _raster(n: int, size: int, N: int, *, seed: int, whole_pixels: bool) -> np.ndarray:
    """The simulator's test scan: a jittered (±1 px) raster over the valid region."""
    positions = raster_positions(n, (size, size), N, seed=seed, jitter=1.0)
    if whole_pixels:
        positions = np.clip(np.round(positions), np.ceil(N / 2), np.floor(size - N / 2 - 1))
    return positions


class _Scan:
    def __init__(self, N: int, size: int, n: int, *, seed: int, whole_pixels: bool) -> None:
        self.obj = _object(size, seed)
        self.positions = _raster(n, size, N, seed=seed + 1, whole_pixels=whole_pixels)
        self.patches = extract_object_patches(self.obj, self.positions, N)


@pytest.fixture(scope="module")
def test_set() -> _Scan:
    """Whole-pixel positions: bilinear extraction is then exact, so stitching can be too."""
    return _Scan(32, 96, 300, seed=0, whole_pixels=True)


@pytest.mark.parametrize("gridsize", [1, 2])
def test_exact_patches_stitch_back_to_the_object(test_set, gridsize: int) -> None:
    groups = group_positions(test_set.positions, gridsize, seed=0)
    indices = groups.indices.reshape(-1)  # every channel of every group, as evaluation does
    keep = central_size(32, 0.3)
    chunk = 64
    assert len(indices) > chunk  # more patterns than one chunk
    stitched, weight = stitch(test_set.patches[indices], test_set.positions[indices],
                              test_set.obj.shape, keep=keep, chunk_size=chunk)
    rows, cols = scanned_region(weight, border=2)
    covered = weight[rows, cols] > 1e-3
    assert covered.mean() > 0.99
    assert (rows.stop - rows.start) * (cols.stop - cols.start) > 0.8 * 62**2
    error = np.abs(stitched[rows, cols] - test_set.obj[rows, cols])[covered]
    assert error.max() < 1e-5


def test_chunking_does_not_change_the_result(test_set) -> None:
    args = (test_set.patches, test_set.positions, test_set.obj.shape)
    one, _ = stitch(*args, keep=10, chunk_size=1000)
    many, _ = stitch(*args, keep=10, chunk_size=7)
    np.testing.assert_allclose(many, one, atol=1e-6)


def test_evaluating_the_truth_gives_perfect_scores() -> None:
    obj = _object(96, seed=3)
    positions = np.round(raster_positions(144, (96, 96), 32, seed=4, jitter=0.0))
    result = stitch_and_score(extract_object_patches(obj, positions, 32), positions, obj,
                      probe=disc_probe(32), phase_sync="overlap")
    m = result.metrics
    assert m["amp_mae"] < 1e-6 and m["phase_mae"] < 1e-6
    assert m["amp_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert m["amp_frc50"] == result.frc["amp"].nyquist
    assert result.extra["coverage"] == 1.0


def test_subpixel_positions_stitch_to_interpolation_accuracy() -> None:
    data = _Scan(32, 96, 300, seed=5, whole_pixels=False)
    result = stitch_and_score(data.patches, data.positions, data.obj, probe=disc_probe(32),
                      phase_sync="overlap")
    # Bilinear extraction then placement smooths by < a pixel: close, not exact.
    assert result.metrics["amp_mae"] < 0.01
    assert result.metrics["amp_ssim"] > 0.95


def test_stitch_refuses_mismatched_positions(test_set) -> None:
    with pytest.raises(ValueError, match=r"positions must have shape \(300, 2\)"):
        stitch(test_set.patches, test_set.positions[:5], test_set.obj.shape, keep=10)


# --- the central part follows the scan step ---------------------------------------------------


def test_a_sparse_scan_evaluates_without_holes() -> None:
    """Regression: ``data.object.size=256 data.n_test=64`` at N=64 kept 30 % of each patch (20
    px) with ~27 px between centres; the holes made evaluation fail with ``border=4 leaves a
    scanned region of 124x0 pixels``."""
    data = _Scan(64, 256, 64, seed=7, whole_pixels=False)
    keep = stitch_size(data.positions, N=64, keep_fraction=0.3)
    assert keep > central_size(64, 0.3) and keep <= 64
    result = stitch_and_score(data.patches, data.positions, data.obj, probe=disc_probe(64),
                      phase_sync="overlap")
    assert result.extra["coverage"] == 1.0
    rows, cols = result.region
    assert rows.stop - rows.start > 180 and cols.stop - cols.start > 180
    assert result.metrics["amp_mae"] < 0.01
    assert result.metrics["amp_ssim"] > 0.95


def test_a_scan_too_sparse_for_a_whole_patch_is_refused_naming_the_settings() -> None:
    positions = _raster(4, 256, 16, seed=0, whole_pixels=False)  # 2 x 2 centres, ~239 px apart
    message = (
        r"the scan leaves 2\d\d\.\d px between neighbouring patch centres: stitching needs a "
        r"central part of 2\d\d px, more than a patch \(N=16\); simulate more test patterns "
        r"\(data\.n_train\) or a smaller object \(data\.object\.size\)"
    )
    with pytest.raises(ValueError, match=message):
        check_stitch_geometry(positions, N=16, keep_fraction=0.3)
    obj = _object(256, seed=0)
    with pytest.raises(ValueError, match=message):
        stitch_and_score(extract_object_patches(obj, positions, 16), positions, obj,
                         phase_sync="none")


@pytest.mark.parametrize(
    ("N", "size", "n_test"),
    [(32, 96, 144), (64, 128, 128), (64, 256, 512), (128, 256, 512)],  # quickstart, default,
)  # dose_response at N = 64 and 128
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dense_scans_keep_the_fixed_fraction(N: int, size: int, n_test: int, seed: int) -> None:
    """Where the scan step is small, nothing changes: the stitch keeps ``keep_fraction · N``."""
    positions = _raster(n_test, size, N, seed=seed, whole_pixels=False)
    assert stitch_size(positions, N=N, keep_fraction=0.3) == central_size(N, 0.3)
    assert check_stitch_geometry(positions, N=N, keep_fraction=0.3) == central_size(N, 0.3)


@pytest.mark.parametrize("whole_pixels", [True, False])
@pytest.mark.parametrize("n", [5, 9, 30])
def test_the_stitch_size_covers_every_pixel_between_the_centres(whole_pixels: bool, n: int) -> None:
    """Place all-ones central parts of the computed size: no pixel inside the hull is left."""
    rng = np.random.default_rng(n)
    positions = rng.uniform(20, 107, size=(n, 2))
    if whole_pixels:
        positions = np.round(positions)
    keep = stitch_size(positions, N=64, keep_fraction=0.05)
    assert keep == 2 * int(np.ceil(largest_gap(positions) - 1e-6)) + 2
    ones = np.ones((n, keep, keep), np.complex64)
    _, weight = stitch(ones, positions, (128, 128), keep=keep)
    yy, xx = np.mgrid[0:128, 0:128]
    inside = Delaunay(positions).find_simplex(np.stack([xx, yy], -1).reshape(-1, 2)) >= 0
    assert inside.sum() > 100
    assert np.all(weight.reshape(-1)[inside] > 1e-3)


def test_largest_gap_of_a_regular_grid_is_half_its_step() -> None:
    xs = np.arange(20.0, 101.0, 10.0)
    grid = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)
    assert largest_gap(grid) == 5.0
    assert stitch_size(grid, N=64, keep_fraction=0.05) == 12
    assert largest_gap(grid[:1]) == 0.0  # one centre
    assert largest_gap(grid[:9]) == 5.0  # one row: collinear centres
    assert largest_gap(np.repeat(grid, 4, axis=0)) == 5.0  # repeated (g > 1) positions


@pytest.mark.parametrize(
    ("positions", "message"),
    [
        (np.zeros((0, 2)), r"positions must have shape \(K, 2\) with K >= 1, got \(0, 2\)"),
        (np.zeros((3, 3)), r"positions must have shape \(K, 2\) with K >= 1, got \(3, 3\)"),
        (np.array([[1.0, np.nan]]), "positions must be finite"),
    ],
)
def test_bad_positions_are_refused(positions: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stitch_size(positions, N=32, keep_fraction=0.3)


# --- weighting by the probe intensity --------------------------------------------------------


def test_probe_weighting_reproduces_exact_patches_on_the_same_region(test_set) -> None:
    keep = central_size(32, 0.3)
    intensity = np.abs(disc_probe(32)) ** 2
    args = (test_set.patches, test_set.positions, test_set.obj.shape)
    weighted, coverage = stitch(*args, keep=keep, weight=intensity)
    _, uniform_coverage = stitch(*args, keep=keep)
    np.testing.assert_array_equal(coverage, uniform_coverage)  # the scored region is the same
    rows, cols = scanned_region(coverage, border=2)
    error = np.abs(weighted[rows, cols] - test_set.obj[rows, cols])
    assert error.max() < 1e-5


def test_probe_weighting_trusts_the_well_lit_pixels(test_set) -> None:
    """Patches right inside the probe's disc and noisy outside it (where a network's output is
    barely constrained): weighting by the light keeps the noise out; the uniform central square,
    whose corners reach past the disc, does not."""
    N = 32
    probe = disc_probe(N)
    intensity = np.abs(probe) ** 2
    rng = np.random.default_rng(0)
    noise = 0.3 * (rng.standard_normal(test_set.patches.shape)
                   + 1j * rng.standard_normal(test_set.patches.shape))
    dark = (intensity / intensity.max() < 0.5)[None]
    patches = np.where(dark, test_set.patches + noise, test_set.patches).astype(np.complex64)
    scores = {how: stitch_and_score(patches, test_set.positions, test_set.obj, stitch_weighting=how,
                            probe=probe, phase_sync="none").metrics["amp_mse"]
              for how in ("probe", "uniform")}
    print(scores)
    assert scores["probe"] < 0.5 * scores["uniform"]  # measured: 0.30
