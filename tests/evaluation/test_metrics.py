"""Metrics against independent computations; alignment removes exactly the gauges."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ptycho.config import ObjectConfig
from ptycho.data import make_object
from ptycho.evaluation import (
    align_amplitude,
    align_phase,
    frc,
    frc_crossing,
    image_metrics,
    psnr_legacy255,
)


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return np.abs(make_object(ObjectConfig(size=64), seed=0)).astype(np.float64)


def test_psnr_and_ssim_equal_skimage(truth: np.ndarray) -> None:
    noisy = truth + np.random.default_rng(0).normal(0, 0.05, truth.shape)
    data_range = float(truth.max() - truth.min())
    metrics, _ = image_metrics(truth, noisy, data_range)
    assert metrics["psnr"] == pytest.approx(
        peak_signal_noise_ratio(truth, noisy, data_range=data_range), rel=1e-12)
    assert metrics["ssim"] == pytest.approx(
        structural_similarity(truth, noisy, data_range=data_range), rel=1e-12)


def test_mse_and_psnr_of_a_constant_offset_have_the_closed_form(truth: np.ndarray) -> None:
    offset, data_range = 0.1, 0.5
    metrics, _ = image_metrics(truth, truth + offset, data_range)
    assert metrics["mse"] == pytest.approx(offset**2, rel=1e-9)
    assert metrics["mae"] == pytest.approx(offset, rel=1e-9)
    assert metrics["psnr"] == pytest.approx(10 * np.log10(data_range**2 / offset**2), rel=1e-9)


def test_legacy_psnr_differs_by_the_peak_ratio(truth: np.ndarray) -> None:
    noisy = truth + np.random.default_rng(1).normal(0, 0.02, truth.shape)
    for data_range in (1.0, 0.5, np.pi):
        metrics, _ = image_metrics(truth, noisy, data_range)
        assert metrics["psnr_legacy255"] - metrics["psnr"] == pytest.approx(
            20 * np.log10(255 / data_range), abs=1e-9)
    assert psnr_legacy255(np.zeros(4), np.full(4, 1.0)) == pytest.approx(48.1308, abs=1e-4)


def test_frc_of_an_image_with_itself_is_one_at_every_ring(truth: np.ndarray) -> None:
    curve = frc(truth, truth)
    assert curve.nyquist == 32 and len(curve.values) == 33
    np.testing.assert_allclose(curve.values, 1.0, atol=1e-12)
    assert curve.crossing(0.5) == 32.0  # never drops: Nyquist


def test_frc50_of_independent_noise_is_near_zero() -> None:
    rng = np.random.default_rng(2)
    crossings = [frc(rng.normal(size=(128, 128)), rng.normal(size=(128, 128))).crossing(0.5)
                 for _ in range(5)]
    # The first rings hold only a few pixels (FRC noise ≈ 1/√pixels): near 0 of 64 rings.
    assert max(crossings) < 3.0
    assert np.mean(crossings) < 1.5


def test_frc_crossing_interpolates_between_rings() -> None:
    assert frc_crossing(np.array([1.0, 0.9, 0.7, 0.3, 0.1]), 0.5) == pytest.approx(2.5)
    assert frc_crossing(np.array([1.0, 0.4, 0.2]), 0.5) == pytest.approx(0 + 0.5 / 0.6)


def test_scaled_amplitude_and_phase_plane_align_to_zero_error(truth: np.ndarray) -> None:
    phase_truth = np.angle(make_object(ObjectConfig(size=64), seed=3))
    rows, cols = np.indices(truth.shape)
    plane = 0.4 + 0.02 * rows - 0.015 * cols
    amplitude = align_amplitude(0.7 * truth, truth)
    phase = align_phase(phase_truth + plane, phase_truth, "plane")
    assert np.abs(amplitude - truth).mean() < 1e-6
    assert np.abs(phase - phase_truth).mean() < 1e-6


@pytest.mark.parametrize("mode", ["mean", "plane"])
@pytest.mark.parametrize("offset", [0.3, -2.9, 3.1])
def test_a_global_phase_offset_is_removed(mode: str, offset: float) -> None:
    phase_truth = np.angle(make_object(ObjectConfig(size=48), seed=4))
    shifted = np.angle(np.exp(1j * (phase_truth + offset)))  # wrapped, as a network outputs it
    aligned = align_phase(shifted, phase_truth, mode)
    assert np.abs(aligned - phase_truth).max() < 1e-6


def test_unknown_phase_alignment_is_refused() -> None:
    with pytest.raises(ValueError, match=r"phase alignment must be one of .* got 'tilt'"):
        align_phase(np.zeros((4, 4)), np.zeros((4, 4)), "tilt")


def test_frc_is_not_inflated_by_the_crop_edges() -> None:
    """Two images sharing only a smooth ramp (a jump at the crop's edges, as a phase plane or an
    amplitude offset makes) and independent fine detail: high rings must not correlate."""
    rng = np.random.default_rng(7)
    rows, cols = np.indices((96, 96))
    ramp = 0.05 * rows + 0.03 * cols
    first = ramp + rng.normal(0, 0.3, (96, 96))
    second = ramp + rng.normal(0, 0.3, (96, 96))
    curve = frc(first, second)
    assert np.abs(curve.values[curve.nyquist // 2 :]).mean() < 0.1
    assert curve.crossing(0.5) < curve.nyquist / 4


def test_a_flat_or_uncorrelated_reconstruction_is_degenerate_and_a_noisy_one_is_not() -> None:
    from ptycho.evaluation import collapse_metrics, degenerate_reason

    rng = np.random.default_rng(0)
    rows, cols = np.indices((64, 64))
    amplitude_truth = 0.8 + 0.2 * np.sin(rows / 3.0) * np.cos(cols / 5.0)
    phase_truth = 0.5 * np.cos(rows / 4.0 + cols / 7.0)
    noisy = collapse_metrics(amplitude_truth + rng.normal(0, 0.2, amplitude_truth.shape),
                             amplitude_truth,
                             phase_truth + rng.normal(0, 0.5, phase_truth.shape), phase_truth)
    assert degenerate_reason(noisy) is None  # noise (SNR about 0.5) is not a collapse
    flat = collapse_metrics(np.full_like(amplitude_truth, 0.8), amplitude_truth,
                            phase_truth, phase_truth)
    assert flat["amp_contrast"] < 1e-12
    assert degenerate_reason(flat).startswith("flat amplitude")
    unrelated = collapse_metrics(0.8 + rng.normal(0, 0.1, amplitude_truth.shape),
                                 amplitude_truth, rng.normal(0, 0.5, phase_truth.shape),
                                 phase_truth)
    assert degenerate_reason(unrelated).startswith("uncorrelated")
    assert degenerate_reason({}) is None  # runs logged before these metrics: undecided


def _band_limited(size: int, cutoff: float, rng: np.random.Generator) -> np.ndarray:
    """Real white noise with a Gaussian spectrum falling to 1/e at ``cutoff`` (a fraction of
    Nyquist), unit variance: detail that fades smoothly with frequency, like a real object's."""
    spectrum = np.fft.fft2(rng.normal(size=(size, size)))
    frequencies = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size)))
    image = np.fft.ifft2(spectrum * np.exp(-(frequencies / (cutoff * 0.5)) ** 2)).real
    return image / image.std()


def test_frc_in_normalised_units_agrees_between_n32_and_n64_reconstructions() -> None:
    """One band-limited object (detail fading to 1/e at 0.4 of Nyquist) with white noise of one
    level, scored by an N=32 and an N=64 scan: their scored regions differ about twofold in
    side, and so do the FRC crossings in ring indices, but as fractions of Nyquist (0.5, 1/7,
    ½-bit and 1-bit thresholds) they agree within 0.05 (measured: at most 0.034), as does the
    half-period resolution in object pixels."""
    from ptycho.evaluation import evaluate
    from ptycho.reconstruction.stitch import scan_weight

    rng = np.random.default_rng(4)
    size = 192
    obj = ((1.0 + 0.2 * _band_limited(size, 0.4, rng))
           * np.exp(0.3j * _band_limited(size, 0.4, rng))).astype(np.complex64)
    noise = (rng.normal(0, 0.1, obj.shape) + 1j * rng.normal(0, 0.1, obj.shape))
    image = (obj + noise).astype(np.complex64)
    found = {}
    for n in (32, 64):
        centres = np.arange(n // 2 + 8, size - n // 2 - 8 + 1, n // 4, dtype=float)
        if n == 32:
            centres = centres[centres <= centres[0] + 64]  # a smaller scan: a smaller region
        positions = np.array([(x, y) for y in centres for x in centres])
        coverage = scan_weight(positions, n, obj.shape, keep_fraction=0.3)
        evaluation = evaluate(image, obj, coverage, border=2, phase_alignment="plane",
                              subpixel_registration=False)
        found[n] = (evaluation.metrics, evaluation.extra, evaluation.amplitude.shape)
        print(n, evaluation.amplitude.shape, {k: round(v, 3) for k, v in evaluation.extra.items()
                                               if "nyquist" in k or "resolution" in k})
    (small, small_extra, small_shape), (large, large_extra, large_shape) = found[32], found[64]
    assert large_shape[0] >= 1.7 * small_shape[0]  # the regions differ about twofold
    assert large["amp_frc50"] >= 1.6 * small["amp_frc50"]  # and so do the ring indices
    for part in ("amp", "phase"):
        for name in ("frc50", "frc17", "frc_halfbit", "frc_onebit"):
            a = small_extra[f"{part}_{name}_nyquist"]
            b = large_extra[f"{part}_{name}_nyquist"]
            assert abs(a - b) < 0.05, (part, name, a, b)
            assert 0.2 < b < 0.95  # a crossing inside the band, not the "never" at Nyquist
        assert small_extra[f"{part}_resolution_px"] == pytest.approx(
            large_extra[f"{part}_resolution_px"], rel=0.12)
