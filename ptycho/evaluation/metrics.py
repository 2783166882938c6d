"""Image-quality metrics for one real image against its ground truth (docs/physics.md §8.4).

PSNR and SSIM come from ``skimage.metrics`` with an explicit ``data_range`` (the truth's range).
FRC is written here because scikit-image has none: Fourier ring correlation per integer ring of the
mean-removed, Hann-apodised images, with the first crossings of 0.5 and 1/7 interpolated between
rings (ring 0, the removed mean, is 1 by convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from scipy.signal.windows import hann
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

__all__ = [
    "BIT_THRESHOLDS", "FLAT_CONTRAST", "UNCORRELATED", "FRCCurve", "bit_threshold",
    "collapse_metrics", "degenerate_reason", "frc", "frc_crossing", "image_metrics",
    "psnr_legacy255"
]

FRC_THRESHOLDS = MappingProxyType({"frc50": 0.5, "frc17": 1.0 / 7.0})
"""Constant FRC thresholds, by metric name."""
BIT_THRESHOLDS = MappingProxyType({"frc_halfbit": 0.5, "frc_onebit": 1.0})
"""Information thresholds (:func:`bit_threshold`), by metric name: bits per ring."""


@dataclass(frozen=True)
class FRCCurve:
    """FRC per ring (``rings[i] = i``, in pixels⁻¹·side units) up to Nyquist (``side / 2``);
    ``pixels[i]``: the number of Fourier pixels in ring ``i`` (the bit thresholds need it)."""

    rings: np.ndarray
    values: np.ndarray
    nyquist: int
    pixels: np.ndarray | None = None

    def crossing(self, threshold: float | np.ndarray) -> float:
        """First crossing of ``threshold`` (a constant or one value per ring), ring index."""
        return frc_crossing(self.values, threshold)

    def bit_threshold(self, bits: float) -> np.ndarray:
        """The ``bits``-bit threshold per ring (:func:`bit_threshold`)."""
        if self.pixels is None:
            raise ValueError("this FRC curve has no ring pixel counts")
        return bit_threshold(self.pixels, bits)

    def fraction_of_nyquist(self, ring: float) -> float:
        """A ring index as a fraction of Nyquist (0.5 cycles per pixel): comparable across
        region sizes, unlike the index."""
        return float(ring) / self.nyquist


def bit_threshold(pixels: np.ndarray, bits: float) -> np.ndarray:
    """The ``bits``-bit FRC threshold per ring of ``pixels`` Fourier pixels (van Heel & Schatz
    2005, J. Struct. Biol. 151:250):

        T(n) = (ε + (2√ε + 1)/√n) / (1 + ε + 2√ε/√n),   ε = (2^bits − 1)/2,

    the FRC at which a ring holds ``bits`` bits of information; ½-bit (ε = 0.2071) gives
    ``(0.2071 + 1.9102/√n)/(1.2071 + 0.9102/√n)``, 1-bit (ε = 0.5)
    ``(0.5 + 2.4142/√n)/(1.5 + 1.4142/√n)``. Written here because scikit-image has no FRC.
    """
    snr = (2.0 ** bits - 1.0) / 2.0
    root_n = np.sqrt(np.maximum(np.asarray(pixels, np.float64), 1.0))
    return (snr + (2 * np.sqrt(snr) + 1) / root_n) / (1 + snr + 2 * np.sqrt(snr) / root_n)


def frc(first: np.ndarray, second: np.ndarray) -> FRCCurve:
    """Fourier ring correlation of two equal-shape real images.

    Non-square images are cropped to their central square so rings are circles. Each image has
    its mean removed and is apodised with a 2-D Hann window first: without that, the jump at the
    crop's edges puts correlated power into every ring and the curve stays high up to Nyquist
    (measured: a phase FRC50 at Nyquist for a reconstruction whose windowed FRC50 is 13 rings).
    """
    first = np.asarray(first, np.float64)
    second = np.asarray(second, np.float64)
    if first.shape != second.shape or first.ndim != 2:
        raise ValueError(f"frc needs two equal 2-D images, got {first.shape} and {second.shape}")
    side = min(first.shape)
    r0, c0 = (first.shape[0] - side) // 2, (first.shape[1] - side) // 2
    first = first[r0 : r0 + side, c0 : c0 + side]
    second = second[r0 : r0 + side, c0 : c0 + side]
    window = np.outer(hann(side, sym=False), hann(side, sym=False))
    f1 = np.fft.fftshift(np.fft.fft2((first - first.mean()) * window))
    f2 = np.fft.fftshift(np.fft.fft2((second - second.mean()) * window))
    yy, xx = np.indices((side, side))
    radius = np.rint(np.hypot(yy - side // 2, xx - side // 2)).astype(int).ravel()
    nyquist = side // 2
    keep = radius <= nyquist
    radius = radius[keep]
    pixels = np.bincount(radius, minlength=nyquist + 1)
    cross = np.bincount(radius, (f1 * np.conj(f2)).real.ravel()[keep], nyquist + 1)
    power1 = np.bincount(radius, (np.abs(f1) ** 2).ravel()[keep], nyquist + 1)
    power2 = np.bincount(radius, (np.abs(f2) ** 2).ravel()[keep], nyquist + 1)
    denominator = np.sqrt(power1 * power2)
    values = np.divide(cross, denominator, out=np.zeros_like(cross), where=denominator > 0)
    values[0] = 1.0  # the DC ring, emptied by the mean removal: 1 by convention
    return FRCCurve(rings=np.arange(nyquist + 1), values=values, nyquist=nyquist, pixels=pixels)


def frc_crossing(values: np.ndarray, threshold: float | np.ndarray) -> float:
    """First ring ``r ≥ 1`` where the FRC falls below ``threshold`` (a constant, or one value
    per ring), interpolated linearly from ring ``r − 1`` (on the FRC minus the threshold); the
    last ring (Nyquist) when it never does."""
    values = np.asarray(values, np.float64)
    margin = values - np.broadcast_to(np.asarray(threshold, np.float64), values.shape)
    for ring in range(1, len(values)):
        if margin[ring] < 0:
            previous = margin[ring - 1]
            if previous < 0:
                return float(ring - 1)
            return float(ring - 1 + previous / (previous - margin[ring]))
    return float(len(values) - 1)


def psnr_legacy255(truth: np.ndarray, reconstruction: np.ndarray) -> float:
    """``10·log10(255² / MSE)``: the peak the published tables used (adds 48.13 dB to a unit-peak
    PSNR). For comparison with those tables only."""
    mse = float(np.mean((np.asarray(truth, np.float64) - reconstruction) ** 2))
    return float(10.0 * np.log10(255.0**2 / max(mse, 1e-30)))


def image_metrics(
    truth: np.ndarray, reconstruction: np.ndarray, data_range: float
) -> tuple[dict[str, float], FRCCurve]:
    """MAE, MSE, NRMSE, PSNR, SSIM, FRC50, FRC1/7 (ring indices) and legacy PSNR of one image
    pair.

    Args:
        truth, reconstruction: equal-shape real images (aligned), same units.
        data_range: the value range PSNR and SSIM refer to (the truth's range), > 0.
    """
    truth = np.asarray(truth, np.float64)
    reconstruction = np.asarray(reconstruction, np.float64)
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range!r}")
    difference = reconstruction - truth
    mse = float(np.mean(difference**2))
    curve = frc(truth, reconstruction)
    metrics = {
        "mae": float(np.mean(np.abs(difference))),
        "mse": mse,
        # ‖reconstruction − truth‖ / ‖truth‖ (skimage's "euclidean" normalisation): a direct,
        # relative error, asked for by a referee beside SSIM (the RMSE for an all-zero truth)
        "nrmse": float(normalized_root_mse(truth, reconstruction, normalization="euclidean"))
        if np.any(truth) else float(np.sqrt(mse)),
        "psnr": float(peak_signal_noise_ratio(truth, reconstruction, data_range=data_range))
        if mse > 0
        else float(10.0 * np.log10(data_range**2 / 1e-30)),
        "ssim": float(structural_similarity(truth, reconstruction, data_range=data_range)),
        "frc50": curve.crossing(FRC_THRESHOLDS["frc50"]),
        "frc17": curve.crossing(FRC_THRESHOLDS["frc17"]),
        "psnr_legacy255": psnr_legacy255(truth, reconstruction),
    }
    return metrics, curve


FLAT_CONTRAST = 0.05
"""Below this ratio of the aligned amplitude's standard deviation to the truth's over the scored
region, a reconstruction is *flat*: the network predicts (nearly) one amplitude everywhere, the
collapse seen at N=128 and in the MAE arms at dose 1e2. Real reconstructions, even at the lowest
doses measured, keep most of the truth's contrast (their noise only adds to it), so the threshold
sits an order of magnitude below them."""
UNCORRELATED = 0.1
"""Below this Pearson correlation with the truth in *both* amplitude and phase, a reconstruction
carries no information about the object. Chance correlation over a scored region of thousands of
pixels is a few hundredths; noisy but real reconstructions correlate far more."""


def _pearson(first: np.ndarray, second: np.ndarray) -> float:
    """Pearson correlation of two equal-shape images; 0 when either is constant (it carries no
    pattern that could correlate)."""
    a = np.asarray(first, np.float64).ravel()
    b = np.asarray(second, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    scale = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b) / scale) if scale > 0 else 0.0


def collapse_metrics(amplitude: np.ndarray, amplitude_truth: np.ndarray, phase: np.ndarray,
                     phase_truth: np.ndarray) -> dict[str, float]:
    """What :func:`degenerate_reason` decides from, for aligned ``(h, w)`` float images of the
    scored region (amplitude in the truth's units, phase in radians): ``amp_contrast`` (the
    reconstruction's amplitude standard deviation over the truth's; NaN for a constant truth),
    ``amp_correlation`` and ``phase_correlation`` (Pearson, with the truth)."""
    truth_spread = float(np.std(amplitude_truth))
    return {
        "amp_contrast": float(np.std(amplitude)) / truth_spread if truth_spread > 0
        else float("nan"),
        "amp_correlation": _pearson(amplitude, amplitude_truth),
        "phase_correlation": _pearson(phase, phase_truth),
    }


def degenerate_reason(metrics: dict[str, float]) -> str | None:
    """Why a run's reconstruction is degenerate (a collapse, not a dose effect), or ``None``.

    Decided from :func:`collapse_metrics`' values in ``metrics`` (absent ones decide nothing):
    a flat amplitude (``amp_contrast`` < :data:`FLAT_CONTRAST`) or no correlation with the
    truth in amplitude and phase (both below :data:`UNCORRELATED`).
    """
    contrast = metrics.get("amp_contrast", float("nan"))
    if np.isfinite(contrast) and contrast < FLAT_CONTRAST:
        return f"flat amplitude (contrast {contrast:.3g} of the truth's, < {FLAT_CONTRAST})"
    amp, phase = metrics.get("amp_correlation"), metrics.get("phase_correlation")
    if amp is not None and phase is not None and max(amp, phase) < UNCORRELATED:
        return (f"uncorrelated with the truth (amplitude {amp:.3g}, phase {phase:.3g}, "
                f"both < {UNCORRELATED})")
    return None
