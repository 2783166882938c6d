"""Seeded test objects: complex transmission functions ``a · exp(iφ)`` (complex64, dimensionless).

- ``lines``: random line segments drawn on a canvas twice the size, blurred at several scales and
  cropped, so structure runs off the edges like in a real sample;
- ``grf``: a Gaussian random field with a power-law spectrum;
- ``cells``: a cell-like specimen: overlapping ellipsoidal cells seen in projection, each with
  a denser nucleus and a few vesicles, on empty background (absorbing: thicker is darker);
- ``npz``: a user's object, key ``objectGuess`` (or ``object``) of an NPZ file.

The amplitude maps the structure to ``[amplitude_min, amplitude_max]``. The phase is ``none``
(amplitude-only: phase metrics are meaningless then), ``structure`` (``phase_max`` × the same
structure) or ``independent`` (``phase_max`` × a second, independent realisation, the default:
amplitude and phase are then recovered separately).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.draw import line_aa

from ptycho.config import ObjectConfig
from ptycho.config.files import object_array
from ptycho.physics.exact import fourier_upsample

__all__ = ["cells_structure", "grf_structure", "lines_structure", "load_object_npz",
           "make_object"]

def _normalise(image: np.ndarray) -> np.ndarray:
    low, high = float(image.min()), float(image.max())
    if high - low < 1e-12:
        return np.zeros_like(image)
    return (image - low) / (high - low)


def lines_structure(size: int, rng: np.random.Generator, density: float,
                    scale: int = 1) -> np.ndarray:
    """``(size·scale, size·scale)`` float64 structure in ``[0, 1]`` made of blurred line
    segments: the same lines (the same draws) rendered ``scale`` times finer, their widths and
    blurs in ``size``'s pixels."""
    canvas_size = 2 * size * scale
    canvas = np.zeros((canvas_size, canvas_size))
    n_lines = max(1, round(density * (2 * size)**2 / 1000.0))
    centres = rng.uniform(0, 2 * size, size=(n_lines, 2))
    if scale > 1:  # coarse pixel j is fine pixels j·scale … j·scale + scale - 1: its centre
        centres = centres * scale + (scale - 1) / 2
    angles = rng.uniform(0, np.pi, size=n_lines)
    lengths = rng.uniform(0.05, 0.4, size=n_lines) * size * scale
    for (cy, cx), angle, length in zip(centres, angles, lengths, strict=True):
        dy, dx = 0.5 * length * np.sin(angle), 0.5 * length * np.cos(angle)
        r0, c0, r1, c1 = (round(v) for v in (cy - dy, cx - dx, cy + dy, cx + dx))
        rr, cc, val = line_aa(r0, c0, r1, c1)
        keep = (rr >= 0) & (rr < canvas_size) & (cc >= 0) & (cc < canvas_size)
        canvas[rr[keep], cc[keep]] = np.maximum(canvas[rr[keep], cc[keep]], val[keep])
    if scale > 1:  # a line one coarse pixel wide, as line_aa draws it on the coarse grid
        canvas = ndimage.maximum_filter(canvas, size=scale)
    # Several blur scales: sharp edges and smooth shading, as in the reference's lines object.
    blurred = sum(_normalise(ndimage.gaussian_filter(canvas, sigma * scale))
                  for sigma in (0.75, 1.5, 3.0))
    start, side = (size // 2) * scale, size * scale
    return _normalise(blurred[start : start + side, start : start + side])


def grf_structure(size: int, rng: np.random.Generator, exponent: float, scale: int = 1,
                  detail: np.random.Generator | None = None) -> np.ndarray:
    """``(size·scale, size·scale)`` float64 Gaussian random field, spectrum ``|k|^-exponent``,
    in ``[0, 1]``. Finer (``scale > 1``): the same field's frequencies (the same draws from
    ``rng``) and the power law continued above them with draws from ``detail``: texture below
    a coarse pixel."""
    radius = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :])
    radius[0, 0] = 1.0
    amplitude = radius ** (-exponent / 2.0)
    amplitude[0, 0] = 0.0
    noise = rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))
    if scale == 1:
        return _normalise(np.fft.ifft2(noise * amplitude).real)
    fine = size * scale
    frequencies = np.fft.fftfreq(fine, d=1.0 / scale)  # cycles per coarse pixel
    radius = np.hypot(frequencies[:, None], frequencies[None, :])
    radius[0, 0] = 1.0
    if detail is None:
        raise ValueError("a finer field needs its detail's generator (detail=)")
    spectrum = (detail.standard_normal((fine, fine))
                + 1j * detail.standard_normal((fine, fine))) * radius ** (-exponent / 2.0)
    spectrum[0, 0] = 0.0
    low = np.r_[0:(size + 1) // 2, fine - size // 2:fine]  # the coarse field's frequencies
    coarse = np.r_[0:(size + 1) // 2, size - size // 2:size]
    spectrum[np.ix_(low, low)] = (noise * amplitude)[np.ix_(coarse, coarse)]
    # fine sample m sits at coarse coordinate m/scale; coarse pixel j's block is centred at
    # fine j·scale + (scale - 1)/2: delay the field by that
    delay = np.exp(-2j * np.pi * np.fft.fftfreq(fine) * (scale - 1) / 2)
    return _normalise(np.fft.ifft2(spectrum * delay[:, None] * delay[None, :]).real)


def cells_structure(size: int, rng: np.random.Generator, scale: int = 1) -> np.ndarray:
    """``(size·scale, size·scale)`` float64 projected thickness in ``[0, 1]`` of a cell-like
    specimen, rendered analytically (the same draws at every ``scale``: finer sampling of the
    same cells).

    About ``2 · size² / 1000`` cells (40% of the area, with overlaps), each an ellipsoid seen
    along its axis: thickness ``c · √(1 − u² − v²)`` with semi-axes 5–12% of ``size``, random
    orientation and peak ``c`` in [0.6, 1]; inside it a nucleus (a third of its axes, half its
    thickness again) and 2–6 vesicles (5–12% of its axes). Edges are sharp (membranes), the
    interior smooth: statistics unlike the lines' or a GRF's.
    """
    side = size * scale
    coordinates = (np.arange(side) - (scale - 1) / 2) / scale  # fine pixel centres, coarse units
    yy, xx = coordinates[:, None], coordinates[None, :]
    thickness = np.zeros((side, side))

    def ellipsoid(cy: float, cx: float, a: float, b: float, angle: float, peak: float) -> None:
        cos, sin = np.cos(angle), np.sin(angle)
        u = ((xx - cx) * cos + (yy - cy) * sin) / a
        v = (-(xx - cx) * sin + (yy - cy) * cos) / b
        thickness[...] += peak * np.sqrt(np.clip(1.0 - u**2 - v**2, 0.0, None))

    for _ in range(max(1, round(2.0 * size**2 / 1000.0))):
        cy, cx = rng.uniform(0, size, 2)
        a, b = rng.uniform(0.05, 0.12, 2) * size
        angle, peak = rng.uniform(0, np.pi), rng.uniform(0.6, 1.0)
        ellipsoid(cy, cx, a, b, angle, peak)
        offset = rng.uniform(-0.3, 0.3, 2)
        ellipsoid(cy + offset[0] * a, cx + offset[1] * b, a / 3, b / 3, angle, 0.5 * peak)
        for _ in range(rng.integers(2, 7)):
            r, phi = rng.uniform(0, 0.7), rng.uniform(0, 2 * np.pi)
            radius = rng.uniform(0.05, 0.12) * min(a, b)
            ellipsoid(cy + r * a * np.sin(phi), cx + r * b * np.cos(phi), radius, radius, 0.0,
                      0.3 * peak)
    return _normalise(thickness)


def make_object(spec: ObjectConfig, seed: int, oversampling: int = 1) -> np.ndarray:
    """The object of ``spec``: ``(size, size)`` complex64 transmission ``a · exp(iφ)``, or
    sampled ``oversampling`` times finer (``(size·K, size·K)``; for the exact simulator: the
    same object, with the structure below a pixel that rendering finer gives; a user's object
    is interpolated).

    The same ``spec``, ``seed`` and ``oversampling`` give a bit-identical object.
    """
    if spec.kind == "npz":
        return fourier_upsample(load_object_npz(spec.path), oversampling)
    if spec.size is None:
        raise ValueError("size=None: the object's size is set from N by JobConfig/SimulationSpec")
    rng = np.random.default_rng(seed)
    detail = np.random.default_rng([seed, 0xDE7A11])  # below a pixel: apart from the rest

    def structure() -> np.ndarray:
        if spec.kind == "lines":
            return lines_structure(spec.size, rng, spec.lines_density, oversampling)
        if spec.kind == "cells":
            return cells_structure(spec.size, rng, oversampling)
        return grf_structure(spec.size, rng, spec.grf_exponent, oversampling, detail)

    shape = structure()
    contrast = 1.0 - shape if spec.kind == "cells" else shape  # cells absorb: thick is dark
    amplitude = spec.amplitude_min + (spec.amplitude_max - spec.amplitude_min) * contrast
    if spec.phase == "none":
        phase = np.zeros_like(shape)
    elif spec.phase == "structure":
        phase = spec.phase_max * shape
    else:
        phase = spec.phase_max * structure()
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def load_object_npz(path: str | Path) -> np.ndarray:
    """Read a 2-D complex object from key ``objectGuess`` (or ``object``) of an NPZ file
    (:func:`ptycho.config.files.object_array`: the checks validation made)."""
    return object_array(path)
