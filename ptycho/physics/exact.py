"""A finer forward model for simulation only: the data no reconstructor's own model shares.

The reconstructors (the PINN's layers, :class:`~ptycho.physics.operator.Ptychography`, pty-chi)
all model a scan on the reconstruction grid: the object sampled at its pixels, sub-pixel
positions by interpolation, the far field as the DFT of an ``N × N`` exit wave sampled at the
detector pixels' centres. Data simulated with one of those models favour the arm that shares it
(an inverse crime). Here instead (docs/physics.md §3.3):

- object and probe are sampled ``K`` times finer (``K = oversampling``); a reconstruction pixel
  is the mean of ``K × K`` of theirs (:func:`block_average`), which is the truth every arm is
  scored against;
- a pattern's patch is cut at its sub-pixel position exactly: the fine object is shifted by the
  position's fraction of a fine pixel in Fourier space (exact for a band-limited field);
- the far field of the fine exit wave is integrated over each detector pixel: it is sampled at
  ``L × L`` points per pixel (``L = pixel_subsamples``, odd, placed symmetrically about the
  pixel's centre) and averaged; only the ``N × N`` pixels of the detector are kept.

Pure numpy/scipy; the dose scale and the Poisson draw are the shared ones
(:mod:`ptycho.physics.dose`).
"""

from __future__ import annotations

import numpy as np
from scipy import fft, ndimage

__all__ = ["block_average", "exact_intensities", "fourier_upsample"]

_BATCH = 16
"""Patterns per FFT batch (memory: 16 × (L·K·N)² complex64, 38 MB at N=64, K=4, L=3)."""


def block_average(fine: np.ndarray, factor: int) -> np.ndarray:
    """``(H, W)`` mean of each ``factor × factor`` block of ``fine (H·factor, W·factor)``
    (same dtype): what one reconstruction pixel of a finer field is."""
    height, width = fine.shape[0] // factor, fine.shape[1] // factor
    if fine.shape != (height * factor, width * factor):
        raise ValueError(f"shape {fine.shape} is not a multiple of the factor {factor}")
    blocks = fine.reshape(height, factor, width, factor)
    return blocks.mean(axis=(1, 3)).astype(fine.dtype)


def fourier_upsample(image: np.ndarray, factor: int) -> np.ndarray:
    """``(H·factor, W·factor)`` complex64 band-limited interpolation of ``image (H, W)`` (zero
    padding of its spectrum), placed so that each input pixel's value sits at the centre of its
    ``factor × factor`` block: for a user's object or probe given on the reconstruction grid."""
    image = np.asarray(image, np.complex128)
    if factor == 1:
        return image.astype(np.complex64)
    height, width = image.shape
    spectrum = fft.fftshift(fft.fft2(image))
    padded = np.zeros((height * factor, width * factor), np.complex128)
    top, left = (height * factor - height) // 2, (width * factor - width) // 2
    padded[top:top + height, left:left + width] = spectrum
    fine = fft.ifft2(fft.ifftshift(padded)) * factor**2
    # the interpolant's sample m sits at input coordinate m / factor; block j's centre, fine
    # pixel j·factor + (factor - 1)/2, must hold input j: delay by (factor - 1)/2 fine pixels
    offset = (factor - 1) / 2.0
    shifted = fft.ifft2(ndimage.fourier_shift(fft.fft2(fine), (offset, offset)))
    return shifted.astype(np.complex64)


def exact_intensities(fine_obj: np.ndarray, fine_probe: np.ndarray, positions: np.ndarray, *,
                      N: int, oversampling: int, pixel_subsamples: int) -> np.ndarray:
    """``(M, N, N)`` float32 far-field intensities of a scan, integrated over detector pixels.

    Args:
        fine_obj: ``(H·K, W·K)`` complex object sampled ``K = oversampling`` times finer than
            the reconstruction grid (dimensionless transmission).
        fine_probe: ``(N·K, N·K)`` complex probe on the same fine grid.
        positions: ``(M, 2)`` float ``(x, y)`` patch centres in reconstruction pixels (the
            convention of :func:`ptycho.physics.geometry.extract_patches`: the patch's first
            pixel is pixel ``y − N/2``), each patch inside the object.
        N: detector side in pixels (the reconstruction's patch side).
        oversampling: ``K``.
        pixel_subsamples: ``L``, odd: far-field points per detector pixel side.

    Returns:
        Intensities in the units of the unitary far field of the reconstruction grid (probe
        units²; their scale is set by the dose afterwards). With ``K = L = 1`` and whole-pixel
        positions they equal ``|fftshift(FFT2(P · o_patch))/N|²`` exactly.
    """
    K, L = int(oversampling), int(pixel_subsamples)
    if L % 2 == 0:
        raise ValueError(f"pixel_subsamples must be odd, got {L}")
    side = N * K
    if fine_probe.shape != (side, side):
        raise ValueError(f"fine_probe must have shape {(side, side)}, got {fine_probe.shape}")
    margin = 2 * K + 2  # fine pixels around each patch: the Fourier shift's wrap-around lands there
    padded_obj = np.pad(np.asarray(fine_obj, np.complex64), margin, mode="edge")
    probe = np.asarray(fine_probe, np.complex64)
    padded = L * side
    centre = padded // 2
    # detector pixel q (q = -N/2 … N/2-1) is sampled at q·L + l - (L-1)/2 of the padded,
    # shifted spectrum: L points spaced 1/L pixel about its centre
    index = centre + np.arange(-N // 2, N // 2)[:, None] * L + np.arange(L)[None, :] - (L - 1) // 2
    index = index.ravel()
    out = np.empty((len(positions), N, N), np.float32)
    for first in range(0, len(positions), _BATCH):
        chunk = np.asarray(positions[first:first + _BATCH], np.float64)
        waves = np.zeros((len(chunk), padded, padded), np.complex64)
        for i, (x, y) in enumerate(chunk):
            waves[i, :side, :side] = probe * _fine_patch(padded_obj, (y - N / 2) * K + margin,
                                                         (x - N / 2) * K + margin, side)
        spectrum = fft.fftshift(fft.fft2(waves, workers=-1), axes=(-2, -1))
        sampled = np.abs(spectrum[:, index][:, :, index]) ** 2
        # mean over each pixel's L×L points; the unitary scale of an N×N DFT: 1/(N·K²)²
        pixels = sampled.reshape(len(chunk), N, L, N, L).mean(axis=(2, 4))
        out[first:first + len(chunk)] = pixels / float(N * K * K) ** 2
    return out


def _fine_patch(padded_obj: np.ndarray, row: float, col: float, side: int) -> np.ndarray:
    """``(side, side)`` of ``padded_obj`` starting at the fractional fine pixel ``(row, col)``:
    the whole-pixel part cut, the fraction applied as an exact Fourier shift."""
    top, left = int(np.floor(row)), int(np.floor(col))
    fraction = (row - top, col - left)
    if fraction == (0.0, 0.0):
        return padded_obj[top:top + side, left:left + side]
    extra = 2
    region = padded_obj[top - extra:top + side + extra, left - extra:left + side + extra]
    shifted = fft.ifft2(ndimage.fourier_shift(fft.fft2(region), (-fraction[0], -fraction[1])))
    return shifted[extra:extra + side, extra:extra + side].astype(np.complex64)
