"""Crop and align a reconstruction to its ground truth (docs/physics.md §8.2–8.3).

A reconstruction is determined up to gauges the physics cannot see: a global amplitude scale (the
learned intensity scale absorbs it), a constant phase and, for phase retrieval, a phase ramp (a
shift of the far field). Alignment removes exactly those before metrics are taken.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.registration import phase_cross_correlation

__all__ = [
    "PHASE_ALIGNMENTS", "align_amplitude", "align_phase", "register", "scanned_region", "wrap"
]

PHASE_ALIGNMENTS = ("plane", "mean", "none")


def wrap(phase: np.ndarray) -> np.ndarray:
    """Phase wrapped to ``(−π, π]`` radians."""
    return np.angle(np.exp(1j * np.asarray(phase)))


def scanned_region(weight: np.ndarray, border: int, threshold: float = 1e-3) -> tuple[slice, slice]:
    """``(rows, cols)`` slices of the scanned region: the bounding box of the pixels the stitch
    covers (``weight > threshold``), with uncovered edge rows and columns peeled off one at a time
    (the scan's ragged corners) and then ``border`` pixels trimmed from every side.

    Raises ``ValueError`` when less than 8×8 pixels remain.
    """
    covered = np.asarray(weight) > threshold
    rows_any, cols_any = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
    if rows_any.size == 0:
        raise ValueError("no pixel of the object is covered by a patch")
    top, bottom = int(rows_any[0]), int(rows_any[-1]) + 1
    left, right = int(cols_any[0]), int(cols_any[-1]) + 1
    while bottom - top > 8 and right - left > 8:
        box = covered[top:bottom, left:right]
        gaps = {"top": 1 - box[0].mean(), "bottom": 1 - box[-1].mean(),
                "left": 1 - box[:, 0].mean(), "right": 1 - box[:, -1].mean()}
        edge, gap = max(gaps.items(), key=lambda item: item[1])
        if gap == 0:
            break
        if edge == "top":
            top += 1
        elif edge == "bottom":
            bottom -= 1
        elif edge == "left":
            left += 1
        else:
            right -= 1
    top, bottom, left, right = top + border, bottom - border, left + border, right - border
    if bottom - top < 8 or right - left < 8:
        raise ValueError(
            f"border={border} leaves a scanned region of {max(0, bottom - top)}x"
            f"{max(0, right - left)} pixels; metrics need at least 8x8")
    return slice(top, bottom), slice(left, right)


def align_amplitude(reconstruction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Reconstructed amplitude times the global scale that matches the truth's mean."""
    reconstruction = np.asarray(reconstruction, np.float64)
    mean = reconstruction.mean()
    if not np.isfinite(mean) or abs(mean) < 1e-12:
        return reconstruction
    return reconstruction * (np.mean(truth) / mean)


def align_phase(reconstruction: np.ndarray, truth: np.ndarray, mode: str) -> np.ndarray:
    """Reconstructed phase with the least-squares plane (``plane``) or the circular mean (``mean``)
    of its difference to the truth removed, then unwrapped onto the truth (each pixel within ±π of
    it), radians."""
    if mode not in PHASE_ALIGNMENTS:
        raise ValueError(f"phase alignment must be one of {PHASE_ALIGNMENTS}, got {mode!r}")
    reconstruction = np.asarray(reconstruction, np.float64)
    truth = np.asarray(truth, np.float64)
    difference = wrap(reconstruction - truth)
    if mode == "mean":
        difference_fit = np.full_like(difference, np.angle(np.mean(np.exp(1j * difference))))
    elif mode == "plane":
        # Centre the difference first so the plane fit does not straddle the ±π cut.
        offset = np.angle(np.mean(np.exp(1j * difference)))
        centred = wrap(difference - offset)
        rows, cols = np.indices(truth.shape, dtype=np.float64)
        design = np.stack([np.ones(truth.size), rows.ravel(), cols.ravel()], axis=1)
        coefficients, *_ = np.linalg.lstsq(design, centred.ravel(), rcond=None)
        difference_fit = offset + (design @ coefficients).reshape(truth.shape)
    else:
        difference_fit = np.zeros_like(difference)
    return truth + wrap(reconstruction - difference_fit - truth)


def register(
    reconstruction: np.ndarray, truth: np.ndarray, upsample: int = 10
) -> tuple[np.ndarray, tuple[float, float]]:
    """Sub-pixel registration of a complex reconstruction onto the truth by the amplitude's
    cross-correlation (``skimage.registration.phase_cross_correlation``).

    Returns ``(shifted reconstruction, (row, col) shift applied in pixels)``.
    """
    shift, _, _ = phase_cross_correlation(np.abs(truth), np.abs(reconstruction),
                                          upsample_factor=upsample)
    real = ndimage.shift(np.real(reconstruction), shift, order=1, mode="nearest")
    imag = ndimage.shift(np.imag(reconstruction), shift, order=1, mode="nearest")
    return (real + 1j * imag).astype(np.complex64), (float(shift[0]), float(shift[1]))
