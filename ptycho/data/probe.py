"""Probes: a soft-edged disc with optional quadratic (defocus-like) phase, or one read from NPZ.

Gauge (ours): a probe is normalised to peak amplitude 1. The absolute gauge is free because the dose
fixes the photon count and the PINN learns a global intensity scale.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage

from ptycho.checks import check_patch_size
from ptycho.config import ProbeConfig
from ptycho.data.arrays import read_npz_array
from ptycho.physics.exact import fourier_upsample

__all__ = ["disc_probe", "load_probe_npz", "make_probe"]

def disc_probe(N: int, settings: ProbeConfig = ProbeConfig()) -> np.ndarray:  # noqa: B008
    """``(N, N)`` complex64 soft-edged disc centred at ``(N/2, N/2)``, peak amplitude 1.

    Args:
        N: patch side, a power of two ≥ 16.
        settings: the disc (a frozen settings object): ``radius_fraction`` (radius / ``N``),
            ``edge_sigma`` (Gaussian blur of the edge, pixels) and ``phase_curvature`` (the phase
            at the disc edge, radians, of ``φ(r) = c · (r / radius)²``).
    """
    return _disc(check_patch_size(N), settings)


def _disc(N: int, settings: ProbeConfig, scale: int = 1) -> np.ndarray:
    """The disc on an ``N`` grid that is ``scale`` times finer than the patch's: centred on the
    patch's pixel ``N/scale/2`` (fine ``N/2 + (scale-1)/2``), its radius ``radius_fraction``
    of ``N``."""
    yy, xx = np.mgrid[0:N, 0:N].astype(np.float64)
    centre = N / 2 + (scale - 1) / 2
    r = np.hypot(yy - centre, xx - centre)
    radius = settings.radius_fraction * N
    amplitude = (r <= radius).astype(np.float64)
    if settings.edge_sigma > 0:
        amplitude = ndimage.gaussian_filter(amplitude, settings.edge_sigma)
    amplitude /= amplitude.max()
    phase = settings.phase_curvature * (r / radius) ** 2
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def load_probe_npz(path: str | Path, N: int) -> np.ndarray:
    """Read an ``(N, N)`` complex probe from key ``probeGuess`` (or ``probe``), peak set to 1."""
    probe, key = read_npz_array(path, ("probeGuess", "probe"), "probe")
    if probe.shape != (N, N):
        raise ValueError(f"probe file {str(path)!r}: key {key!r} has shape {probe.shape}, "
                         f"expected ({N}, {N})")
    peak = float(np.abs(probe).max())
    if not np.isfinite(peak) or peak <= 0:
        raise ValueError(f"probe file {str(path)!r}: key {key!r} is zero or not finite")
    return (probe / peak).astype(np.complex64)


def make_probe(spec: ProbeConfig, N: int, oversampling: int = 1) -> np.ndarray:
    """The ``(N, N)`` complex64 probe of ``spec``, or sampled ``oversampling`` times finer
    (``(N·K, N·K)``, the same disc in the coarse grid's pixels; a user's probe interpolated):
    for the exact simulator, which gives the reconstructors its block average."""
    if spec.kind == "npz":
        return fourier_upsample(load_probe_npz(spec.path, N), oversampling)
    if oversampling == 1:
        return disc_probe(N, spec)
    finer = dataclasses.replace(spec, edge_sigma=spec.edge_sigma * oversampling)
    return _disc(N * oversampling, finer, oversampling)
