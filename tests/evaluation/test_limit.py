"""The Cramér–Rao limit: the Fisher matrix against finite differences of an independent float64
forward model, 1/dose scaling, dense against matrix-free, and a Monte-Carlo check that a
maximum-likelihood estimate's scored MSE is at or above the bound."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg, ndimage

from ptycho.data.probe import disc_probe
from ptycho.evaluation import align_amplitude, align_phase
from ptycho.evaluation.limit import (
    estimate_limit,
    fisher_matrix,
    free_pixels,
    limit_cache_key,
    load_or_estimate_limit,
)
from ptycho.physics import Ptychography

N = 16
SIDE = 28
REGION = (slice(9, 19), slice(9, 19))


def small_experiment(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth complex object (amplitude 0.5–1, phase ±0.6 rad), the default disc probe and a
    5×5 raster with a sub-pixel step."""
    rng = np.random.default_rng(seed)
    amplitude = ndimage.gaussian_filter(rng.random((SIDE, SIDE)), 1.5)
    phase = ndimage.gaussian_filter(rng.standard_normal((SIDE, SIDE)), 1.5)
    amplitude = 0.5 + 0.5 * (amplitude - amplitude.min()) / np.ptp(amplitude)
    phase = 0.6 * phase / np.abs(phase).max()
    grid = 9.3 + 2.3 * np.arange(5)
    positions = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)  # (x, y)
    return amplitude * np.exp(1j * phase), disc_probe(N).astype(np.complex128), positions


def extraction_matrices(positions: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(M, N², H·W)`` float64 bilinear extraction, written independently of ptycho.physics:
    ``patch[i, j] = image[y − N/2 + i, x − N/2 + j]``, zero outside."""
    height, width = shape
    out = np.zeros((len(positions), N * N, height * width))
    for m, (x, y) in enumerate(positions):
        for i in range(N):
            for j in range(N):
                row, col = y - N / 2 + i, x - N / 2 + j
                r0, c0 = int(np.floor(row)), int(np.floor(col))
                fr, fc = row - r0, col - c0
                for dr, wr in ((0, 1 - fr), (1, fr)):
                    for dc, wc in ((0, 1 - fc), (1, fc)):
                        if 0 <= r0 + dr < height and 0 <= c0 + dc < width:
                            out[m, i * N + j, (r0 + dr) * width + c0 + dc] += wr * wc
    return out


class Reference:
    """The forward model in float64 NumPy: ``λ_j = s² |fftshift(fft2(P · E_j o))/N|²``."""

    def __init__(self, obj, probe, positions, free, scale):
        self.obj, self.free, self.scale = obj, free, scale
        extract = extraction_matrices(positions, obj.shape)[:, :, free.ravel()]
        # A_j = F · diag(P) · E_j on the free pixels, (M, N², n) complex
        lit = probe.ravel()[None, :, None] * extract
        spectra = np.fft.fftshift(np.fft.fft2(lit.reshape(len(positions), N, N, -1),
                                              axes=(1, 2)), axes=(1, 2)) / N
        self.operator = spectra.reshape(len(positions), N * N, -1)
        fixed = obj.copy()
        fixed[free] = 0
        known = (probe.ravel()[None, :, None] * extraction_matrices(positions, obj.shape)) @ \
            fixed.ravel()[:, None]
        self.offset = (np.fft.fftshift(np.fft.fft2(known.reshape(len(positions), N, N)),
                                       axes=(1, 2)) / N).reshape(len(positions), N * N)

    def field(self, values: np.ndarray) -> np.ndarray:
        return self.operator @ values + self.offset

    def expected(self, values: np.ndarray) -> np.ndarray:
        return self.scale * np.abs(self.field(values)) ** 2

    def score(self, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """``(2n,)`` gradient of the Poisson log-likelihood ``Σ k log λ − λ`` in (Re, Im):
        ``Jᵀ(k/λ − 1)`` without forming ``J``."""
        field = self.field(values)
        residual = counts.reshape(field.shape) / (self.scale * np.abs(field) ** 2) - 1
        back = 2 * self.scale * np.einsum("mkn,mk->n", np.conj(self.operator), field * residual)
        return np.concatenate([back.real, back.imag])

    def jacobian(self, values: np.ndarray) -> np.ndarray:
        """``(M·N², 2n)`` ∂λ/∂(Re, Im)."""
        field = self.field(values)
        product = np.conj(field)[..., None] * self.operator
        d_real, d_imag = 2 * self.scale * product.real, -2 * self.scale * product.imag
        return np.concatenate([d_real, d_imag], axis=-1).reshape(-1, 2 * values.size)


def finite_difference_fisher(reference: Reference, values: np.ndarray, step: float = 1e-6):
    lam = reference.expected(values).ravel()
    columns = []
    for k in range(2 * values.size):
        delta = np.zeros(values.size, np.complex128)
        delta[k % values.size] = step if k < values.size else 1j * step
        columns.append((reference.expected(values + delta).ravel()
                        - reference.expected(values - delta).ravel()) / (2 * step))
    jacobian = np.stack(columns, axis=1)
    return jacobian.T @ (jacobian / lam[:, None])


def test_the_fisher_matrix_equals_finite_differences_and_scales_with_the_dose() -> None:
    obj, probe, positions = small_experiment()
    positions = positions[[6, 12]]  # two patterns
    free = np.zeros(obj.shape, bool)
    free[12:15, 11:15] = True  # twelve object pixels, lit by both
    operator = Ptychography(probe, positions, obj.shape)
    ours = fisher_matrix(operator, obj, free)  # at s² = 1
    for dose in (1e3, 1e5):
        scale = operator.dose_scale(obj, dose)
        reference = finite_difference_fisher(Reference(obj, probe, positions, free, scale),
                                             obj[free])
        error = np.linalg.norm(scale * ours - reference) / np.linalg.norm(reference)
        print(f"dose {dose:g}: relative error of the Fisher matrix {error:.2e}")
        assert error < 1e-3
    ratio = operator.dose_scale(obj, 1e5) / operator.dose_scale(obj, 1e3)
    assert ratio == pytest.approx(100.0, rel=1e-6)  # I ∝ s² ∝ dose, so the bound ∝ 1/dose


@pytest.mark.slow
def test_matrix_free_agrees_with_dense_within_its_standard_error() -> None:
    obj, probe, positions = small_experiment(1)
    dense = estimate_limit(obj, probe, positions, REGION, method="dense")
    sampled = estimate_limit(obj, probe, positions, REGION, method="cg", samples=24, seed=3)
    assert dense.method == "dense" and sampled.method == "cg"
    for part in ("amp", "phase"):
        exact, estimate = getattr(dense, f"{part}_mse"), getattr(sampled, f"{part}_mse")
        stderr = getattr(sampled, f"{part}_mse_stderr")
        print(f"{part}: dense {exact:.4g}, CG {estimate:.4g} ± {stderr:.2g}")
        assert exact > 0
        assert abs(estimate - exact) < 4 * stderr + 1e-3 * exact
        # the per-pixel maps: the dense one is exact, the sampled one (Hutchinson's diagonal
        # from the same probes) agrees with it within each pixel's standard error
        exact_map = dense.maps[f"{part}_variance"]
        sampled_map = sampled.maps[f"{part}_variance"]
        pixel_stderr = sampled.maps[f"{part}_variance_stderr"]
        assert exact_map.shape == sampled_map.shape == (REGION[0].stop - REGION[0].start,
                                                         REGION[1].stop - REGION[1].start)
        assert exact_map.mean() == pytest.approx(exact, rel=1e-9)
        assert sampled_map.mean() == pytest.approx(estimate, rel=1e-9)
        z_scores = np.abs(sampled_map - exact_map) / np.maximum(pixel_stderr, 1e-300)
        within = float(np.mean(z_scores < 3))
        print(f"{part} map: {within:.1%} of pixels within 3 standard errors; median relative "
              f"standard error {np.median(pixel_stderr / exact_map):.2f}")
        assert within > 0.95
    assert sampled.cg_iterations > 0


def test_phase_alignment_can_only_lower_the_bound() -> None:
    obj, probe, positions = small_experiment(2)
    bounds = {mode: estimate_limit(obj, probe, positions, REGION, phase_alignment=mode).phase_mse
              for mode in ("none", "mean", "plane")}
    assert bounds["plane"] <= bounds["mean"] <= bounds["none"] * (1 + 1e-9)


@pytest.mark.slow
def test_a_maximum_likelihood_estimate_is_at_or_above_the_bound() -> None:
    """50 Poisson draws at a high dose; each reconstructed by Fisher scoring (Newton's method
    on the Poisson likelihood with the information at the truth, in the independent float64
    model) from the truth until the step vanishes, then aligned and scored as the pipeline
    does."""
    obj, probe, positions = small_experiment(4)
    dose = 1e6
    # Dim edge pixels (under 5% of the peak illumination) are known to both the estimator and
    # the bound: their estimates are far from the truth even at this dose (not linear there).
    operator = Ptychography(probe, positions, obj.shape)
    free = free_pixels(operator, threshold=0.05)
    scale = operator.dose_scale(obj, dose)
    reference = Reference(obj, probe, positions, free, scale)
    truth = obj[free]
    lam = reference.expected(truth)
    jacobian = reference.jacobian(truth)
    information = jacobian.T @ (jacobian / lam.ravel()[:, None])
    gauge = np.concatenate([(1j * truth).real, (1j * truth).imag])
    gauge /= np.linalg.norm(gauge)
    factor = linalg.cho_factor(information + np.median(np.diag(information))
                               * np.outer(gauge, gauge))
    rows, cols = REGION
    amplitude_truth, phase_truth = np.abs(obj[rows, cols]), np.angle(obj[rows, cols])

    def scored(values: np.ndarray) -> np.ndarray:
        """(amp_mse, phase_mse) of the estimate, aligned as the pipeline aligns."""
        estimate = obj.copy()
        estimate[free] = values
        amp = align_amplitude(np.abs(estimate[rows, cols]), amplitude_truth)
        phase = align_phase(np.angle(estimate[rows, cols]), phase_truth, "plane")
        return np.array([np.mean((amp - amplitude_truth) ** 2),
                         np.mean((phase - phase_truth) ** 2)])

    rng = np.random.default_rng(0)
    errors = []
    for _ in range(50):
        counts = rng.poisson(lam).astype(np.float64).ravel()
        values = truth.copy()
        history = []
        for newton in (False,) * 6 + (True,) * 3:
            # six cheap steps with the information at the truth, then Newton's own (exact
            # information at the estimate; the global phase, which the likelihood cannot see,
            # pinned by the same stand-in eigenvalue)
            if newton:
                expected = reference.expected(values).ravel()
                jacobian = reference.jacobian(values)
                local = jacobian.T @ (jacobian / expected[:, None])
                along = np.concatenate([(1j * values).real, (1j * values).imag])
                along /= np.linalg.norm(along)
                solve = linalg.cho_factor(local + np.median(np.diag(local))
                                          * np.outer(along, along))
            else:
                solve = factor
            step = linalg.cho_solve(solve, reference.score(values, counts))
            values = values + step[: truth.size] + 1j * step[truth.size:]
            history.append(scored(values))
        # converged: the last step moves the scores by under 0.1%, far below their Monte-Carlo
        # error (about 4%)
        np.testing.assert_allclose(history[-1], history[-2], rtol=1e-3)
        errors.append(history[-1])
    amp_mse, phase_mse = np.array(errors).T
    bound = estimate_limit(obj, probe, positions, REGION, free_threshold=0.05).at_scale(scale)
    for part, values in (("amp", amp_mse), ("phase", phase_mse)):
        mean, stderr = values.mean(), values.std(ddof=1) / np.sqrt(len(values))
        limit = bound[f"{part}_mse_crb"]
        print(f"{part}_mse: Monte Carlo {mean:.4g} ± {stderr:.2g}, bound {limit:.4g}, "
              f"ratio {mean / limit:.3f}")
        assert mean + 3 * stderr >= limit  # no estimate beats the bound
        assert mean < 1.5 * limit  # and at this dose maximum likelihood comes close to it


def test_the_per_pixel_bound_is_a_variance_map_whose_mean_is_the_bound() -> None:
    obj, probe, positions = small_experiment(3)
    limit = estimate_limit(obj, probe, positions, REGION, method="dense")
    for part in ("amp", "phase"):
        variance = limit.maps[f"{part}_variance"]
        assert variance.shape == obj[REGION].shape
        assert np.all(variance > 0)  # every scored pixel is uncertain at a finite dose
        assert variance.mean() == pytest.approx(getattr(limit, f"{part}_mse"), rel=1e-9)
        np.testing.assert_array_equal(limit.maps[f"{part}_variance_stderr"], 0.0)
        at_dose = limit.maps_at_scale(250.0)[f"{part}_variance"]
        np.testing.assert_allclose(at_dose, variance / 250.0, rtol=1e-6)  # ∝ 1/dose
    # the scan's edge is lit less, so its bound is higher than the centre's
    amplitude = limit.maps["amp_variance"]
    centre = amplitude[amplitude.shape[0] // 2 - 1: amplitude.shape[0] // 2 + 1,
                       amplitude.shape[1] // 2 - 1: amplitude.shape[1] // 2 + 1]
    assert np.median(centre) < np.median(amplitude)


def test_the_limit_is_cached_by_scan_and_settings(tmp_path) -> None:
    obj, probe, positions = small_experiment(5)
    first, hit = load_or_estimate_limit(obj, probe, positions, REGION, tmp_path)
    again, hit_again = load_or_estimate_limit(obj, probe, positions, REGION, tmp_path)
    assert (hit, hit_again) == (False, True) and again == first
    assert set(again.maps) == set(first.maps) == {
        "amp_variance", "amp_variance_stderr", "phase_variance", "phase_variance_stderr"}
    for name, values in first.maps.items():
        np.testing.assert_array_equal(again.maps[name], values)
    (stored,) = (tmp_path / "limits").glob("*.npz")
    stored.write_bytes(b"PK\x03\x04 half-written")  # e.g. a writer killed mid-way
    rebuilt, hit_rebuilt = load_or_estimate_limit(obj, probe, positions, REGION, tmp_path)
    assert not hit_rebuilt  # recomputed, not a crash
    assert (rebuilt.amp_mse, rebuilt.phase_mse) == (first.amp_mse, first.phase_mse)
    assert not list((tmp_path / "limits").glob("*part*"))  # no temporary file left behind
    moved = limit_cache_key(obj, probe, positions + 0.5, REGION)
    assert moved != limit_cache_key(obj, probe, positions, REGION)
    assert limit_cache_key(obj, probe, positions, REGION, phase_alignment="mean") != \
        limit_cache_key(obj, probe, positions, REGION)


@pytest.mark.slow
def test_a_job_reports_the_bound_and_its_efficiency_computed_once_per_scan(tmp_path) -> None:
    """Two doses of one scan: the bound is computed for the first and reused for the second,
    exactly 1/dose apart; the efficiencies are bound / MSE."""
    from ptycho.config import validate
    from ptycho.pipeline import run_pipeline
    from tests.test_config import composed

    results = {}
    for dose in ("1e3", "1e5"):
        config = validate(composed("experiment=smoke", f"dose={dose}", "eval.crb=true",
                                   "data.object.size=32", "train.epochs=1",
                                   "tracking.log_model=false"))
        results[dose] = run_pipeline(config, cache_dir=tmp_path)
    low, high = results["1e3"].metrics, results["1e5"].metrics
    assert low["time_crb_s"] > 0 and high["time_crb_s"] == 0  # cached beside the datasets
    assert len(list((tmp_path / "limits").glob("*.json"))) == 1
    for part in ("amp", "phase"):
        assert low[f"{part}_mse_crb"] > 0
        assert low[f"{part}_mse_crb"] / high[f"{part}_mse_crb"] == pytest.approx(100, rel=1e-6)
        for metrics in (low, high):
            assert metrics[f"{part}_crb_efficiency"] == pytest.approx(
                metrics[f"{part}_mse_crb"] / metrics[f"{part}_mse"])
    assert results["1e5"].tags["crb_method"] == "dense"
    # the per-pixel bound travels with the result and into the artifacts
    low_maps, high_maps = results["1e3"].limit_maps, results["1e5"].limit_maps
    for part in ("amp", "phase"):
        variance = low_maps[f"{part}_variance"]
        assert variance.shape == results["1e3"].evaluation.amplitude.shape
        assert variance.mean() == pytest.approx(low[f"{part}_mse_crb"], rel=1e-5)
        np.testing.assert_allclose(variance / high_maps[f"{part}_variance"], 100, rtol=1e-4)
    from ptycho.artifacts import write_artifacts

    folder = write_artifacts(tmp_path / "artifacts", config, results["1e5"], title="limit")
    assert (folder / "figures" / "limit.png").stat().st_size > 0
    with np.load(folder / "reconstruction.npz") as stored:
        np.testing.assert_array_equal(stored["crb_amp_variance"], high_maps["amp_variance"])


def test_fluence_is_the_dose_per_scan_step_squared_and_follows_the_overlap() -> None:
    """A phase-only object passes every incident photon to the detector, so each pattern's
    dose is its incident photons and the fluence inside a raster of step d is dose / d² per
    pixel²; halving the step quadruples it at the same photons per pattern."""
    from ptycho.evaluation.limit import fluence

    side, dose = 64, 1e4
    phase = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal((side, side)), 2)
    obj = np.exp(1j * phase)
    probe = disc_probe(16).astype(np.complex128)
    region = (slice(24, 40), slice(24, 40))
    found = {}
    for step in (4.0, 2.0):
        grid = np.arange(12.0, side - 12.0 + 0.1, step)
        positions = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
        operator = Ptychography(probe, positions, obj.shape)
        scale = operator.dose_scale(obj, dose)
        found[step] = fluence(operator, scale, region)
        assert found[step]["fluence"] == pytest.approx(dose / step**2, rel=0.02)
        assert found[step]["fluence_p5"] <= found[step]["fluence"]
    assert found[2.0]["fluence"] == pytest.approx(4 * found[4.0]["fluence"], rel=0.02)
    measured = fluence(operator, 1.1 * scale, region)  # at 10% more counts
    assert measured["fluence"] == pytest.approx(1.1 * found[2.0]["fluence"])
