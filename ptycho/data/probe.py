"""Probes: a soft-edged disc with optional quadratic (defocus-like) phase, a focused probe (a
circular aperture or a zone plate with a central stop, defocused, with optional astigmatism and
coma), or one read from NPZ.

Gauge (ours): a probe is normalised to peak amplitude 1. The absolute gauge is free because the dose
fixes the photon count and the PINN learns a global intensity scale.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage

from ptycho.checks import check_patch_size
from ptycho.config import ProbeConfig, ProbeGuessConfig, ProbeKind, ProbeStart
from ptycho.config.files import probe_array
from ptycho.physics.exact import fourier_upsample

__all__ = ["disc_probe", "estimate_probe", "focused_probe", "guessed_probe_settings",
           "load_probe_npz", "make_probe"]

_EDGE_SUBSAMPLES = 8
"""Points per pupil pixel side at which the aperture's transmission is averaged (its edge
anti-aliased: a pixelated 8-pixel disc is a poor circle)."""
_SPILL_LIMIT = 0.05
"""Most of the focused probe's intensity allowed in the patch's outer eighth on each side: more
means its rings wrap around the periodic patch (the probe does not fit). A hard-edged aperture's
Airy tail alone puts about 1% there (aperture 8 pixels, N=64), a footprint wider than the patch
tens of percent."""

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


def focused_probe(N: int, settings: ProbeConfig) -> np.ndarray:
    """``(N, N)`` complex64 focused probe centred at ``(N/2, N/2)``, peak amplitude 1.

    The far-field geometry fixes the conventions: the probe's spectrum is the illuminating
    aperture's image on the detector (the pupil), so the probe is the inverse DFT of the pupil
    ``A(k) exp(iφ(k))`` on the detector's ``N × N`` pixels, with ``k`` counted from the detector
    centre (our far field, ``fftshift(FFT2(P·o))/N``, puts it there). ``A`` is the aperture's
    transmission: 1 for ``central_stop ≤ ρ ≤ 1``, ``ρ = |k| / aperture_radius``, averaged over
    ``8 × 8`` points per pixel at its edges. ``φ(ρ, θ) = defocus·ρ² + astigmatism_x·ρ² cos 2θ +
    astigmatism_diagonal·ρ² sin 2θ + (3ρ³ − 2ρ)(coma_x cos θ + coma_y sin θ)`` (θ from the
    column axis; each term ±1 at ρ = 1, so each coefficient is radians at the aperture's edge):
    the Fresnel propagation from the focus to the sample is the ``defocus`` term. In focus and
    without a stop the probe is the Airy pattern ``2 J1(v)/v``, ``v = 2π·aperture_radius·r/N``.

    Args:
        N: patch side, a power of two ≥ 16.
        settings: ``aperture_radius`` (detector pixels, < N/2), ``central_stop`` (fraction of
            the aperture's radius), ``defocus`` and the aberrations (radians at the edge).

    Raises:
        ValueError: an aperture that does not fit the detector, or a probe whose rings reach
            the patch's edges (more than 5% of its intensity in the outer eighth: the patch is
            periodic, so they would wrap around).
    """
    N = check_patch_size(N)
    radius = float(settings.aperture_radius)
    if not 0 < radius < N / 2:
        raise ValueError(f"aperture_radius={radius:g} must be in (0, N/2 = {N / 2:g}) detector "
                         "pixels")
    k = np.arange(N) - N // 2
    sub = (np.arange(_EDGE_SUBSAMPLES) + 0.5) / _EDGE_SUBSAMPLES - 0.5
    fine = (k[:, None] + sub[None, :]).ravel()  # N·S points along each axis
    rho_fine = np.hypot(fine[:, None], fine[None, :]) / radius
    inside = ((rho_fine <= 1) & (rho_fine >= settings.central_stop)).astype(np.float64)
    transmission = inside.reshape(N, _EDGE_SUBSAMPLES, N, _EDGE_SUBSAMPLES).mean(axis=(1, 3))
    ky, kx = np.meshgrid(k, k, indexing="ij")
    rho, theta = np.hypot(kx, ky) / radius, np.arctan2(ky, kx)
    phase = (settings.defocus * rho**2
             + rho**2 * (settings.astigmatism_x * np.cos(2 * theta)
                         + settings.astigmatism_diagonal * np.sin(2 * theta))
             + (3 * rho**3 - 2 * rho) * (settings.coma_x * np.cos(theta)
                                         + settings.coma_y * np.sin(theta)))
    pupil = transmission * np.exp(1j * phase)
    probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(pupil)))  # centre at (N/2, N/2)
    intensity = np.abs(probe) ** 2
    border = max(1, N // 8)
    ring = np.ones((N, N), bool)
    ring[border:N - border, border:N - border] = False
    spill = float(intensity[ring].sum() / intensity.sum())
    if spill > _SPILL_LIMIT:
        footprint = N * abs(settings.defocus) / (np.pi * radius)
        raise ValueError(
            f"the focused probe does not fit the N={N} patch: {spill:.1%} of its intensity is in "
            f"the outer {border} pixels (at most {_SPILL_LIMIT:.0%}); its footprint radius is "
            f"about N·|defocus|/(π·aperture_radius) = {footprint:.1f} "
            f"pixels plus the focus's {0.61 * N / radius:.1f}: lower data.probe.defocus="
            f"{settings.defocus:g} or raise data.probe.aperture_radius={radius:g}")
    return (probe / np.abs(probe).max()).astype(np.complex64)


def load_probe_npz(path: str | Path, N: int) -> np.ndarray:
    """Read an ``(N, N)`` complex probe from key ``probeGuess`` (or ``probe``), peak set to 1
    (:func:`ptycho.config.files.probe_array`: the checks validation made)."""
    probe = probe_array(path)
    if probe.shape != (N, N):
        raise ValueError(f"probe file {str(path)!r} has shape {probe.shape}, expected ({N}, {N})")
    return (probe / np.abs(probe).max()).astype(np.complex64)


def make_probe(spec: ProbeConfig, N: int, oversampling: int = 1) -> np.ndarray:
    """The ``(N, N)`` complex64 probe of ``spec``, or sampled ``oversampling`` times finer
    (``(N·K, N·K)``, the same disc in the coarse grid's pixels; a focused probe, band-limited,
    and a user's probe interpolated):
    for the exact simulator, which gives the reconstructors its block average."""
    if spec.kind == "npz":
        return fourier_upsample(load_probe_npz(spec.path, N), oversampling)
    if spec.kind == "focused":  # band-limited on the patch's grid: its finer samples are exact
        return fourier_upsample(focused_probe(N, spec), oversampling)
    if oversampling == 1:
        return disc_probe(N, spec)
    finer = dataclasses.replace(spec, edge_sigma=spec.edge_sigma * oversampling)
    return _disc(N * oversampling, finer, oversampling)


def guessed_probe_settings(guess: ProbeGuessConfig, spec: ProbeConfig) -> ProbeConfig:
    """The settings of a ``perturbed`` probe guess: ``spec`` at the wrong defocus
    (``defocus_error`` radians more: a focused probe's ``defocus``, a disc's
    ``phase_curvature``), a focused one without its astigmatism and coma unless
    ``keep_aberrations``.

    Raises:
        ValueError: an NPZ probe, which has no model to perturb (use ``estimate``).
    """
    if guess.kind != ProbeStart.perturbed:
        raise ValueError(f"guessed_probe_settings is for data.probe_guess.kind=perturbed, got "
                         f"{guess.kind!r}")
    if spec.kind == ProbeKind.npz:
        raise ValueError("data.probe_guess.kind=perturbed needs a probe model (disc or focused) "
                         "to perturb, got data.probe.kind=npz: use data.probe_guess.kind=estimate")
    if spec.kind == ProbeKind.disc:
        return dataclasses.replace(spec, phase_curvature=spec.phase_curvature + guess.defocus_error)
    aberrations = {} if guess.keep_aberrations else {
        "astigmatism_x": 0.0, "astigmatism_diagonal": 0.0, "coma_x": 0.0, "coma_y": 0.0}
    return dataclasses.replace(spec, defocus=spec.defocus + guess.defocus_error, **aberrations)


def estimate_probe(counts: np.ndarray, mask: np.ndarray | None = None,
                   background: float = 0.0) -> np.ndarray:
    """A probe from the data alone: ``(N, N)`` complex64, peak amplitude 1.

    The mean pattern of a weakly scattering object is about the empty beam's far-field
    intensity ``|FFT(P)|²``: its square root (background removed) is taken as the pupil's
    amplitude with a flat phase (the focus: the data say nothing of the defocus), and brought
    to the sample by the inverse DFT. Pixels under the ``mask`` (``False``) are filled with the
    median amplitude of the measured pixels within two pixels of them (a beamstop sits inside
    the bright disc of the pupil).

    Args:
        counts: ``(M, N, N)`` photons per pixel, DC at ``(N/2, N/2)``.
        mask: ``(N, N)`` bool, ``True`` where a pixel measures; ``None``: all.
        background: expected background photons per pixel, removed first.
    """
    counts = np.asarray(counts, np.float64)
    amplitude = np.sqrt(np.maximum(counts.mean(axis=0) - background, 0.0))
    if mask is not None and not np.all(mask):
        near = ndimage.binary_dilation(~mask, iterations=2) & mask
        fill = float(np.median(amplitude[near])) if near.any() else float(amplitude[mask].mean())
        amplitude = np.where(mask, amplitude, fill)
    if not amplitude.max() > 0:
        raise ValueError("estimate_probe: the counts hold no photons above the background")
    probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(amplitude)))
    return (probe / np.abs(probe).max()).astype(np.complex64)
