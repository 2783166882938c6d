"""Our conventions → pty-chi's, in one place (docs/physics.md §1.3, §1.4, §3 and §10).

Ours (``ptycho.physics``):

- A position is ``(x, y)`` in object pixels, column first; the patch at ``(x, y)`` has its pixel
  ``(N/2, N/2)`` on that point: ``patch[i, j] = obj[y − N/2 + i, x − N/2 + j]``.
- Far field ``F = fftshift(FFT2(P · o)) / N`` (unitary), zero frequency at pixel ``(N/2, N/2)``.
- Counts ``λ = s² |F|²`` photons per pixel, with the dose scale ``s²`` kept apart from the probe
  (the probe is normalised to peak amplitude 1).

pty-chi (2.2; ``ptychi.image_proc.extract_patches_fourier_shift``,
``ptychi.forward_models.PlanarPtychographyForwardModel``, ``ptychi.io_handles``):

- Positions ``p`` are given per axis (``position_y_px``, ``position_x_px``) and placed on the
  object buffer at ``p + origin`` (``determine_position_origin_coords_by=SPECIFIED``). The object
  patch is cut at the *snapped* centre ``c = round(p) + origin`` starting at pixel
  ``c − (N − 1)/2``, and the rest ``p − round(p)`` is applied as a sub-pixel shift of the probe.
  With ``p = x`` and ``origin = (−1/2, −1/2)``, ``c = round(x) − 1/2`` and the patch starts at
  ``round(x) − N/2``: ours, for whole-pixel positions. (Origin ``(0, 0)`` with ``p = x − 1/2``
  puts the continuous centre at the same place, but ``round`` of a half-integer rounds to even
  and moves alternate patches by a pixel, measured.)
- At sub-pixel positions the two models differ in how they shift: ours resamples the object
  bilinearly under a fixed probe, pty-chi shifts the probe by a Fourier shift over a snapped
  object patch. The far-field intensities agree to the accuracy of the interpolation.
- Far field ``FFT2(P · o)`` without normalisation, zero frequency at pixel ``(0, 0)``; data given
  with ``fft_shift=True`` are ``fftshift``-ed on loading, which moves our centred zero frequency
  there (``fftshift`` and ``ifftshift`` agree for even ``N``).
- Intensities are ``|FFT2(P · o)|²`` in the data's units, so the probe carries the photon scale:
  ``P_ptychi = P · s / N`` gives ``|FFT2(P_ptychi · o)|² = s² |F|² = λ``. Its shape is
  ``(n_opr_modes, n_incoherent_modes, N, N) = (1, 1, N, N)``, the same orientation as ours.

The scale ``s`` given to pty-chi is the "flat-field" one a beamline measures without a sample:
``s² = dose / Σ|P|²`` (:func:`flat_field_scale`). The true simulation scale also depends on the
unknown object (``dose / mean Σ|P·o|²``); with the flat-field scale the reconstructed amplitude
comes out multiplied by one constant, which the evaluation's global amplitude alignment removes.

The convention tests (``tests/iterative/test_conventions.py``) compare pty-chi's own patch
extraction and forward model with ours, pixel by pixel, on a single bright pixel and an
asymmetric probe; a mirrored or half-pixel-shifted mapping fails them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["POSITION_ORIGIN", "flat_field_scale", "ptychi_positions", "ptychi_probe"]

POSITION_ORIGIN = (-0.5, -0.5)
"""pty-chi's ``position_origin_coords`` (rows, columns) for our positions (module docstring)."""


def ptychi_positions(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Our ``(M, 2)`` ``(x, y)`` patch centres → pty-chi's ``(position_y_px, position_x_px)``.

    Args:
        positions: ``(M, 2)`` float ``(x, y)`` object pixels (docs/physics.md §1.3).

    Returns:
        Two ``(M,)`` float64 arrays, rows then columns, for pty-chi with the origin
        :data:`POSITION_ORIGIN` specified.
    """
    positions = np.asarray(positions, np.float64)
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(f"positions must have shape (M, 2) (x, y), got {positions.shape}")
    return positions[:, 1].copy(), positions[:, 0].copy()


def flat_field_scale(probe: np.ndarray, dose: float) -> float:
    """``s`` with ``s² = dose / Σ|P|²``: the photon scale that gives an empty beam (object 1)
    ``dose`` photons per pattern (Parseval: ``Σ|F(P)|² = Σ|P|²``).

    Args:
        probe: ``(N, N)`` complex probe, arbitrary amplitude units.
        dose: photons per pattern, positive.
    """
    energy = float(np.sum(np.abs(np.asarray(probe, np.complex128)) ** 2))
    if not (energy > 0 and np.isfinite(energy)):
        raise ValueError(f"the probe carries no finite energy (Σ|P|² = {energy!r})")
    if not (dose > 0 and np.isfinite(dose)):
        raise ValueError(f"dose must be positive and finite, got {dose!r}")
    return float(np.sqrt(dose / energy))


def ptychi_probe(probe: np.ndarray, scale: float) -> np.ndarray:
    """Our ``(N, N)`` probe and photon scale ``s`` → pty-chi's ``(1, 1, N, N)`` complex64 probe
    ``P · s / N`` (its unnormalised FFT then yields photon counts)."""
    probe = np.asarray(probe)
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1]:
        raise ValueError(f"probe must have shape (N, N), got {probe.shape}")
    N = probe.shape[0]
    return (probe.astype(np.complex128) * (scale / N)).astype(np.complex64)[None, None]
