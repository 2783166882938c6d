"""A probe estimate against the true probe, after the gauges blind ptychography cannot fix
(docs/physics.md §12.4).

Counts determine the probe ``P`` and object ``O`` only up to transformations that leave every
pattern's intensity unchanged: a complex constant (``cP``, ``O/c``), a linear phase ramp
(``P e^{2πi k·r/N}``, ``O e^{−2πi k·r/N}``: each pattern gains a constant phase) and a translation
(``P(r − d)``, ``O(u − d)``: each exit wave moves by ``d``). :func:`align_probe` removes the three
(5 real parameters and the complex constant, the last in closed form) before the error is taken.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize
from skimage.registration import phase_cross_correlation

__all__ = ["align_probe", "probe_error", "transform_probe"]


def transform_probe(probe: np.ndarray, shift: tuple[float, float],
                    ramp: tuple[float, float]) -> np.ndarray:
    """``probe (N, N)`` translated by ``shift = (dx, dy)`` pixels (a Fourier shift: exact for the
    periodic patch) and multiplied by ``exp(2πi (kx x + ky y)/N)``, ``ramp = (kx, ky)`` cycles
    across the patch. complex128."""
    probe = np.asarray(probe, np.complex128)
    N = probe.shape[0]
    frequency = np.fft.fftfreq(N)
    spectrum = np.fft.fft2(probe) * np.exp(-2j * np.pi * (frequency[None, :] * shift[0]
                                                         + frequency[:, None] * shift[1]))
    coordinate = np.arange(N) - N // 2
    phase = 2 * np.pi * (ramp[0] * coordinate[None, :] + ramp[1] * coordinate[:, None]) / N
    return np.fft.ifft2(spectrum) * np.exp(1j * phase)


def _residual(estimate: np.ndarray, truth: np.ndarray,
              parameters: np.ndarray) -> tuple[float, np.ndarray]:
    """Relative error ``‖c G(estimate) − truth‖ / ‖truth‖`` at the best complex ``c`` for the
    gauge ``G`` of ``parameters = (dx, dy, kx, ky)``, and ``c G(estimate)``. ``G`` applies the
    ramp first, then the translation: the exact inverse of :func:`transform_probe` (a ramp of
    a fractional number of cycles is discontinuous across the periodic patch's edge, so the two
    steps commute only approximately)."""
    ramped = transform_probe(estimate, (0.0, 0.0), (parameters[2], parameters[3]))
    moved = transform_probe(ramped, (parameters[0], parameters[1]), (0.0, 0.0))
    energy = float(np.vdot(moved, moved).real)
    c = np.vdot(moved, truth) / energy if energy > 0 else 0.0
    aligned = c * moved
    return float(np.linalg.norm(aligned - truth) / np.linalg.norm(truth)), aligned


def align_probe(estimate: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, float]:
    """``estimate`` with the gauges removed against ``truth`` (both ``(N, N)`` complex), and the
    relative error ``‖aligned − truth‖ / ‖truth‖`` that remains.

    The translation starts from the cross-correlation of the amplitudes, the ramp from that of
    the far-field amplitudes (a ramp is a shift there), each to 1/20 pixel; then both are
    refined together (Powell) with the complex constant in closed form at each step.
    """
    estimate = np.asarray(estimate, np.complex128)
    truth = np.asarray(truth, np.complex128)
    if estimate.shape != truth.shape or estimate.ndim != 2:
        raise ValueError(f"probes must be two (N, N) arrays of one shape, got {estimate.shape} "
                         f"and {truth.shape}")
    if not (np.all(np.isfinite(estimate)) and np.linalg.norm(truth) > 0):
        raise ValueError("align_probe needs a finite estimate and a nonzero truth")
    if not np.linalg.norm(estimate) > 0:
        return np.zeros_like(truth), 1.0
    shift = phase_cross_correlation(np.abs(truth), np.abs(estimate), upsample_factor=20,
                                    normalization=None)[0]
    far = [np.abs(np.fft.fftshift(np.fft.fft2(p))) for p in (truth, estimate)]
    ramp = phase_cross_correlation(far[0], far[1], upsample_factor=20, normalization=None)[0]
    start = np.array([shift[1], shift[0], ramp[1], ramp[0]])  # (rows, cols) → (x, y)
    best = optimize.minimize(lambda parameters: _residual(estimate, truth, parameters)[0], start,
                             method="Powell", options={"xtol": 1e-6, "ftol": 1e-12})
    error, aligned = _residual(estimate, truth, best.x)
    return aligned.astype(np.complex64), error


def probe_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Relative error of a probe estimate after its gauges (:func:`align_probe`): 0 for the truth
    itself (any constant, ramp or translation of it), about 1 for a probe unrelated to it."""
    return align_probe(estimate, truth)[1]
