"""Stitching exact ground-truth patches reproduces the object in the scanned interior, and the
stitched central part grows with the scan step so that a sparse scan leaves no holes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import Delaunay

import ptycho.evaluation.stitching as stitching
from ptycho import physics
from ptycho.data import disc_probe, extract_object_patches, group_positions, raster_positions
from ptycho.evaluation import central_size, evaluate, scanned_region, stitch
from ptycho.evaluation.stitching import (
    check_stitch_geometry,
    largest_gap,
    likelihood_offsets,
    phase_offsets,
    stitch_size,
)


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
    result = evaluate(extract_object_patches(obj, positions, 32), positions, obj,
                      probe=disc_probe(32), phase_sync="overlap")
    m = result.metrics
    assert m["amp_mae"] < 1e-6 and m["phase_mae"] < 1e-6
    assert m["amp_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert m["amp_frc50"] == result.frc["amp"].nyquist
    assert result.extra["coverage"] == 1.0


def test_subpixel_positions_stitch_to_interpolation_accuracy() -> None:
    data = _Scan(32, 96, 300, seed=5, whole_pixels=False)
    result = evaluate(data.patches, data.positions, data.obj, probe=disc_probe(32),
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
    result = evaluate(data.patches, data.positions, data.obj, probe=disc_probe(64),
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
        evaluate(extract_object_patches(obj, positions, 16), positions, obj, phase_sync="none")


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
    scores = {how: evaluate(patches, test_set.positions, test_set.obj, stitch_weighting=how,
                            probe=probe, phase_sync="none").metrics["amp_mse"]
              for how in ("probe", "uniform")}
    print(scores)
    assert scores["probe"] < 0.5 * scores["uniform"]  # measured: 0.30


# --- phase synchronisation: the constant phase no pattern measures ---------------------------


def _scrambled(data: _Scan, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The patches, each times its own random constant phase ``e^{-iφ_k}``, and ``φ``."""
    phases = np.random.default_rng(seed).uniform(-np.pi, np.pi, len(data.patches))
    return (data.patches * np.exp(-1j * phases)[:, None, None]).astype(np.complex64), phases


def _circular_residual(found: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """``found − expected`` wrapped, less its circular mean (a global phase is not measured)."""
    difference = np.exp(1j * (found - expected))
    return np.angle(difference * np.conj(difference.mean()))


@pytest.mark.parametrize(("whole_pixels", "tolerance"), [(True, 1e-4), (False, 0.03)])
def test_phase_offsets_recover_random_constant_phases(whole_pixels: bool,
                                                      tolerance: float) -> None:
    """Exact patches with arbitrary offsets: the synchronisation finds them from the overlaps
    alone (exactly on whole pixels; to bilinear accuracy off them), and the stitch is as good
    as the truth's: phase SSIM 0.02 without it."""
    data = _Scan(32, 96, 300, seed=2, whole_pixels=whole_pixels)
    scrambled, phases = _scrambled(data, seed=0)
    weight = np.abs(disc_probe(32)) ** 2
    residual = _circular_residual(phase_offsets(scrambled, data.positions, weight), phases)
    print(f"whole pixels {whole_pixels}: largest residual {np.abs(residual).max():.2e} rad")
    assert np.abs(residual).max() < tolerance

    probe = disc_probe(32)
    truth = evaluate(data.patches, data.positions, data.obj, phase_sync="none", probe=probe)
    synced = evaluate(scrambled, data.positions, data.obj, phase_sync="overlap", probe=probe)
    unsynced = evaluate(scrambled, data.positions, data.obj, phase_sync="none", probe=probe)
    assert unsynced.metrics["phase_ssim"] < 0.2
    for key in ("amp_ssim", "phase_ssim"):
        assert synced.metrics[key] == pytest.approx(truth.metrics[key], abs=1e-3), key
    assert synced.extra["phase_sync_offset_std"] > 1.0  # uniform phases: a wide spread


def test_phase_offsets_leave_consistent_patches_alone(test_set) -> None:
    offsets = phase_offsets(test_set.patches, test_set.positions, np.ones((32, 32)))
    assert np.abs(offsets).max() < 1e-4


def test_patches_whose_illumination_does_not_overlap_keep_their_phases() -> None:
    """Steps wider than the probe's disc: the patches share only the probe's faint tails, which
    say nothing; synchronising on them once scrambled exact patches (amplitude MAE 0.12)."""
    data = _Scan(64, 256, 64, seed=7, whole_pixels=False)  # 27 px steps, a 22 px disc
    offsets = phase_offsets(data.patches, data.positions, np.abs(disc_probe(64)) ** 2)
    assert np.all(offsets == 0.0)


def test_each_connected_part_of_a_scan_is_synchronised_on_its_own() -> None:
    """Two scans that do not overlap share no information: each is solved alone and centred."""
    data = _Scan(32, 160, 625, seed=4, whole_pixels=True)  # 5.3 px steps
    x = data.positions[:, 0]
    keep = (x < 60) | (x > 100)  # a gap wider than a patch splits the scan in two
    patches, positions = data.patches[keep], data.positions[keep]
    scrambled = (patches * np.exp(-1j * np.linspace(-3, 3, len(patches)))[:, None, None])
    found = phase_offsets(scrambled, positions, np.abs(disc_probe(32)) ** 2)
    for part in (positions[:, 0] < 60, positions[:, 0] > 100):
        residual = _circular_residual(found[part], np.linspace(-3, 3, len(patches))[part])
        assert np.abs(residual).max() < 1e-4
        assert abs(np.angle(np.exp(1j * found[part]).mean())) < 1e-9


def test_the_dense_and_the_iterative_eigensolver_agree(monkeypatch) -> None:
    data = _Scan(32, 96, 40, seed=6, whole_pixels=False)
    scrambled, _ = _scrambled(data, seed=1)
    weight = np.abs(disc_probe(32)) ** 2
    assert len(scrambled) <= stitching._DENSE_SYNC
    dense = phase_offsets(scrambled, data.positions, weight)
    monkeypatch.setattr(stitching, "_DENSE_SYNC", 0)
    iterative = phase_offsets(scrambled, data.positions, weight)
    assert np.abs(_circular_residual(iterative, dense)).max() < 1e-6


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: phase_offsets(d.patches, d.positions, np.ones((16, 16))),
         r"weight must have shape \(32, 32\), got \(16, 16\)"),
        (lambda d: phase_offsets(d.patches, d.positions, np.zeros((32, 32))),
         "weight must be finite, >= 0 and not all zero"),
        (lambda d: phase_offsets(d.patches, d.positions[:3], np.ones((32, 32))),
         r"positions must have shape \(300, 2\)"),
        (lambda d: evaluate(d.patches, d.positions, d.obj),
         r"phase_sync and stitch_weighting='probe' need the \(32, 32\) probe, got None"),
        (lambda d: evaluate(d.patches, d.positions, d.obj, phase_sync="none",
                            stitch_weighting="probe", probe=np.ones((16, 16))),
         r"need the \(32, 32\) probe, got \(16, 16\)"),
        (lambda d: evaluate(d.patches, d.positions, d.obj, stitch_weighting="central"),
         r"stitch_weighting must be one of \['probe', 'uniform'\], got 'central'"),
        (lambda d: evaluate(d.patches, d.positions, d.obj, phase_sync=True, probe=disc_probe(32)),
         r"phase_sync must be one of \['none', 'overlap', 'likelihood'\], got True"),
        (lambda d: evaluate(d.patches, d.positions, d.obj, probe=disc_probe(32)),
         r"phase_sync='likelihood' needs the measured counts \(300, 32, 32\), got None"),
        (lambda d: likelihood_offsets(d.patches, d.positions, disc_probe(32),
                                      np.ones((300, 32, 32)), d.obj.shape, keep=10, weight=None,
                                      initial=np.zeros(3)),
         r"initial must have shape \(300,\), got \(3,\)"),
        (lambda d: likelihood_offsets(d.patches, d.positions, disc_probe(32),
                                      np.ones((300, 32, 32)), d.obj.shape, keep=10, weight=None,
                                      patterns=np.arange(5)),
         r"patterns must have shape \(300,\), got \(5,\)"),
        (lambda d: likelihood_offsets(d.patches, d.positions, disc_probe(32),
                                      -np.ones((300, 32, 32)), d.obj.shape, keep=10, weight=None),
         "counts must be finite and >= 0"),
    ],
)
def test_bad_synchronisation_inputs_are_refused(test_set, call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(test_set)


# --- phase synchronisation by the measured counts --------------------------------------------


def _counts(data: _Scan, probe: np.ndarray, dose: float, seed: int) -> np.ndarray:
    """Poisson counts of the true patches at ``dose`` photons per pattern."""
    expected = physics.expected_counts_at_dose(data.patches, probe, dose)
    return physics.poisson_counts(expected, seed).numpy()


@pytest.mark.parametrize("weighting", ["probe", "uniform"])
def test_likelihood_offsets_recover_random_constant_phases(weighting: str) -> None:
    """Exact patches with arbitrary offsets and the counts they were measured with: the offsets
    that best explain the counts are the true ones (to the noise), from a poor start, under
    either stitch; each patch given twice (as g > 1 groups share patterns) changes nothing."""
    data = _Scan(32, 96, 300, seed=2, whole_pixels=True)
    scrambled, phases = _scrambled(data, seed=0)
    probe = disc_probe(32)
    counts = _counts(data, probe, 1e6, seed=1)
    start = phases + np.random.default_rng(3).normal(0.0, 0.3, len(phases))  # 0.3 rad off
    weight = np.abs(probe) ** 2 if weighting == "probe" else None
    found, info = likelihood_offsets(scrambled, data.positions, probe, counts, data.obj.shape,
                                     keep=10, weight=weight, initial=start)
    residual = _circular_residual(found, phases)
    print(f"largest residual {np.abs(residual).max():.2e} rad, {info}")
    assert np.abs(residual).max() < 0.03  # measured: 0.017 (rms 0.005) at 10⁶ photons
    assert info["nll_gain_per_photon"] > 0
    assert abs(np.angle(np.exp(1j * found).mean())) < 1e-9  # no global phase chosen
    if weighting == "probe":
        twice = np.concatenate([np.arange(300), np.arange(300)])
        again, repeat = likelihood_offsets(
            scrambled[twice], data.positions[twice], probe, counts[twice], data.obj.shape,
            keep=10, weight=weight, initial=start[twice], patterns=twice)
        assert repeat["nll_gain_per_photon"] == pytest.approx(info["nll_gain_per_photon"],
                                                              rel=0.05)
        assert np.abs(_circular_residual(again[:300], phases)).max() < 0.03


def test_the_counts_correct_offsets_that_the_overlaps_get_wrong() -> None:
    """Patches like a g=1 network's (measured on the quickstart): right near the centre, their
    phase contrast shrunk towards the patch's own mean where the probe is faint, each with its
    own constant. Agreement in the overlaps (the faint edges) passes the shrinkage on to the
    whole stitched phase; the counts see the stitched object under every probe and do not."""
    N, dose = 32, 1e5
    data = _Scan(N, 96, 300, seed=2, whole_pixels=False)
    probe = disc_probe(N)
    light = np.abs(probe) ** 2 / np.abs(probe).max() ** 2
    phase = np.angle(data.patches)
    mean = np.angle((light * data.patches).sum(axis=(1, 2)))[:, None, None]
    shrink = 0.3 + 0.7 * light  # 1 at the centre, 0.3 in the dark
    relative = np.angle(np.exp(1j * (phase - mean)))
    shrunk = np.abs(data.patches) * np.exp(1j * (mean + shrink * relative))
    scrambled = (shrunk * np.exp(-1j * _scrambled(data, seed=0)[1])[:, None, None])
    scrambled = scrambled.astype(np.complex64)
    counts = _counts(data, probe, dose, seed=1)
    overlap = evaluate(scrambled, data.positions, data.obj, phase_sync="overlap", probe=probe)
    likelihood = evaluate(scrambled, data.positions, data.obj, probe=probe, counts=counts)
    scores = {"overlap": overlap.metrics["phase_ssim"],
              "likelihood": likelihood.metrics["phase_ssim"]}
    print(scores, likelihood.extra)
    assert likelihood.extra["overlap_sync_phase_ssim"] == pytest.approx(scores["overlap"])
    assert likelihood.extra["phase_sync_nll_gain_per_photon"] > 0
    assert scores["likelihood"] > scores["overlap"] + 0.05  # measured: 0.977 vs 0.812
