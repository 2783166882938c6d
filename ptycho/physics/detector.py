"""What a detector does to the photons that reach it (docs/physics.md §12.1): a mask of the
pixels it does not measure (a beamstop over the central pixels, gaps) and a known background.

``λ_measured = m · (λ + b)``: ``m`` (``(N, N)``, 1 where a pixel measures, 0 where it does not)
and ``b`` the background's expected photons per measured pixel. The reconstructors' expected
counts pass through the same map, so a masked pixel has ``λ = 0`` and ``k = 0`` (a
:class:`~ptycho.data.Scan` zeroes it): it adds ``0 − 0·log ε = 0`` to every Poisson loss and
likelihood, and, ``λ`` being constant there, nothing to any gradient (tests/physics/test_detector).

Saturation and read noise are simulated (:func:`detect`) but not modelled by any reconstructor:
they are a mismatch the arms face as a real detector's would be.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ptycho.physics.dose import poisson_counts

__all__ = ["Detector", "beamstop_mask", "detect"]


def beamstop_mask(N: int, radius: float) -> np.ndarray:
    """``(N, N)`` bool, ``False`` within ``radius`` detector pixels of the zero frequency
    ``(N/2, N/2)`` (a round beamstop), ``True`` elsewhere; radius 0: every pixel measures."""
    if not (np.isfinite(radius) and 0 <= radius < N / 2):
        raise ValueError(f"beamstop radius must be in [0, N/2 = {N / 2}) pixels, got {radius!r}")
    rows, columns = np.mgrid[0:N, 0:N] - N // 2
    return np.hypot(rows, columns) >= radius if radius > 0 else np.ones((N, N), bool)


@dataclass(frozen=True, eq=False)
class Detector:
    """The known part of a detector's response.

    Attributes:
        mask: ``(N, N)`` bool, ``True`` where a pixel measures; ``None``: every pixel does.
        background: expected background photons per measured pixel and pattern (≥ 0, Poisson).
    """

    mask: np.ndarray | None = None
    background: float = 0.0

    def __post_init__(self) -> None:
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if mask.ndim != 2 or mask.shape[0] != mask.shape[1] or mask.dtype != bool:
                raise ValueError(f"detector mask must be a square 2-D bool array, got "
                                 f"{mask.dtype} with shape {mask.shape}")
            if not mask.any():
                raise ValueError("detector mask measures no pixel")
            object.__setattr__(self, "mask", None if mask.all() else mask)
        background = float(self.background)
        if not (np.isfinite(background) and background >= 0):
            raise ValueError(f"detector background must be finite and >= 0 photons per pixel, "
                             f"got {self.background!r}")
        object.__setattr__(self, "background", background)

    @property
    def ideal(self) -> bool:
        """Every pixel measures and there is no background: ``λ_measured = λ``."""
        return self.mask is None and self.background == 0.0

    def weights(self, N: int) -> np.ndarray:
        """``(N, N)`` float32: 1 where a pixel measures, 0 where it does not."""
        if self.mask is None:
            return np.ones((N, N), np.float32)
        if self.mask.shape != (N, N):
            raise ValueError(f"detector mask is {self.mask.shape}, the patterns {(N, N)}")
        return self.mask.astype(np.float32)

    def expected(self, expected: tf.Tensor) -> tf.Tensor:
        """``(..., N, N)`` float32 photons per pixel reaching the detector → what it measures on
        average, ``m · (λ + b)`` (the input unchanged for an ideal detector)."""
        expected = tf.convert_to_tensor(expected, tf.float32)
        if self.ideal:
            return expected
        measured = expected + np.float32(self.background)
        if self.mask is None:
            return measured
        return measured * tf.constant(self.weights(int(expected.shape[-1])))

    def information_weights(self, signal: np.ndarray) -> np.ndarray | None:
        """Each pixel's share of the Fisher information an ideal detector would give
        (:func:`ptycho.physics.poisson_fisher`): 0 where it does not measure, ``λ/(λ + b)``
        under the background ``b``; ``None`` for an ideal detector. ``signal``: ``(M, N, N)``
        photons per pixel ``λ`` reaching it."""
        if self.ideal:
            return None
        mask = self.weights(signal.shape[-1])
        if self.background == 0.0:
            return mask
        return (mask * signal / (signal + self.background)).astype(np.float32)

    def zero_unmeasured(self, counts: np.ndarray) -> np.ndarray:
        """``counts (..., N, N)`` with the masked pixels 0 (the same array when none is)."""
        if self.mask is None:
            return counts
        return np.where(self.mask, counts, 0).astype(counts.dtype)

    def signal(self, counts: np.ndarray) -> np.ndarray:
        """Counts less the background's mean (float32, clipped at 0) on measured pixels: what
        an engine without a background model is given (pty-chi's)."""
        if self.background == 0.0:
            return counts
        return self.zero_unmeasured(np.maximum(counts - np.float32(self.background), 0)
                                    ).astype(np.float32)

    def measured_fraction(self, probe: np.ndarray) -> float:
        """The share of an empty beam's far-field intensity ``|FFT(P)|²`` on measured pixels:
        how much of the dose the detector sees of a weakly scattering object (1: no mask)."""
        if self.mask is None:
            return 1.0
        far = np.abs(np.fft.fftshift(np.fft.fft2(np.asarray(probe, np.complex128)))) ** 2
        return float(far[self.mask].sum() / far.sum())


def detect(expected: np.ndarray, detector: Detector, *, seed: int, saturation: float = 0.0,
           read_noise: float = 0.0) -> np.ndarray:
    """Photon counts a detector records: ``Poisson(m · (λ + b))``, then optionally clipped at
    ``saturation`` counts and added Gaussian read noise of ``read_noise`` photons (rounded to
    whole counts, clipped at 0, masked pixels 0).

    Args:
        expected: ``(M, N, N)`` float32 photons per pixel reaching the detector (the signal λ).
        detector: the mask and background.
        seed: the Poisson noise's seed (the read noise draws from a stream derived from it).
        saturation: counts at which a pixel saturates; 0: never.
        read_noise: standard deviation of the read noise, photons; 0: none.

    Returns:
        ``(M, N, N)`` float32 counts (integers).
    """
    if not (np.isfinite(saturation) and saturation >= 0):
        raise ValueError(f"saturation must be >= 0 counts (0: none), got {saturation!r}")
    if not (np.isfinite(read_noise) and read_noise >= 0):
        raise ValueError(f"read_noise must be >= 0 photons (0: none), got {read_noise!r}")
    counts = poisson_counts(detector.expected(expected), seed).numpy()
    if saturation > 0:
        counts = np.minimum(counts, np.float32(saturation))
    if read_noise > 0:
        rng = np.random.default_rng([int(seed), 0x2EAD])
        counts = np.maximum(np.round(counts + read_noise * rng.standard_normal(counts.shape)), 0)
        counts = detector.zero_unmeasured(counts.astype(np.float32))
    return counts.astype(np.float32)
