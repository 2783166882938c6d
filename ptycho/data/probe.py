"""Probes: a soft-edged disc with optional quadratic (defocus-like) phase, or one read from NPZ.

Gauge (ours): a probe is normalised to peak amplitude 1. The absolute gauge is free because the dose
fixes the photon count and the PINN learns a global intensity scale.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ptycho.checks import check_patch_size
from ptycho.data.arrays import read_npz_array

__all__ = ["PROBE_KINDS", "ProbeSpec", "disc_probe", "load_probe_npz", "make_probe"]

PROBE_KINDS = ("disc", "npz")


@dataclass(frozen=True)
class ProbeSpec:
    """What determines the probe (enters the dataset-cache key; an NPZ by its content hash)."""

    kind: str = "disc"
    radius_fraction: float = 0.17
    """Disc radius as a fraction of ``N`` (the reference's default ≈ 0.17)."""
    edge_sigma: float = 1.0
    """Gaussian blur of the disc edge, pixels."""
    phase_curvature: float = 2.0
    """Quadratic phase at the disc edge, radians. Nonzero by default: a real, centro-symmetric
    probe leaves the twin-image ambiguity o(r) ↔ conj(o(−r)) of a single pattern unresolved."""
    path: str = ""
    """NPZ file with a ``probeGuess`` (or ``probe``) ``(N, N)`` complex array (``npz`` only)."""

    def __post_init__(self) -> None:
        if self.kind not in PROBE_KINDS:
            raise ValueError(f"kind must be one of {PROBE_KINDS}, got {self.kind!r}")
        if not 0.0 < self.radius_fraction <= 0.5:
            raise ValueError(
                f"radius_fraction must lie in (0, 0.5], got {self.radius_fraction!r}"
            )
        if self.edge_sigma < 0:
            raise ValueError(f"edge_sigma must be >= 0 pixels, got {self.edge_sigma!r}")
        if self.kind == "npz" and not self.path:
            raise ValueError("path must name an NPZ file for kind 'npz', got ''")

    def fingerprint(self) -> dict[str, object]:
        """The fields that determine the probe, with an NPZ named by its content hash."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if self.kind == "npz":
            fields["path"] = hashlib.sha256(Path(self.path).read_bytes()).hexdigest()
        return fields


def disc_probe(
    N: int, *, radius_fraction: float = 0.17, edge_sigma: float = 1.0, phase_curvature: float = 0.0
) -> np.ndarray:
    """``(N, N)`` complex64 soft-edged disc centred at ``(N/2, N/2)``, peak amplitude 1.

    Args:
        N: patch side, a power of two ≥ 16.
        radius_fraction: disc radius / ``N``.
        edge_sigma: Gaussian blur of the edge, pixels.
        phase_curvature: phase (radians) at the disc edge of ``φ(r) = c · (r / radius)²``.
    """
    N = check_patch_size(N)
    yy, xx = np.mgrid[0:N, 0:N].astype(np.float64)
    r = np.hypot(yy - N / 2, xx - N / 2)
    radius = radius_fraction * N
    amplitude = (r <= radius).astype(np.float64)
    if edge_sigma > 0:
        amplitude = ndimage.gaussian_filter(amplitude, edge_sigma)
    amplitude /= amplitude.max()
    phase = phase_curvature * (r / radius) ** 2
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


def make_probe(spec: ProbeSpec, N: int) -> np.ndarray:
    """The ``(N, N)`` complex64 probe of ``spec``."""
    if spec.kind == "npz":
        return load_probe_npz(spec.path, N)
    return disc_probe(
        N,
        radius_fraction=spec.radius_fraction,
        edge_sigma=spec.edge_sigma,
        phase_curvature=spec.phase_curvature,
    )
