"""The Cramér–Rao limit of a simulated experiment (docs/physics.md §11).

For a known object ``o``, probe ``P``, scan positions and dose, the expected counts of pattern
``j`` are ``λ_j = s² |F(P · E_j o)|²`` (the forward model of :mod:`ptycho.physics`: ``E_j``
bilinear patch extraction, ``F`` the unitary centred FFT, ``s²`` the dose scale). For Poisson
counts the Fisher information of the object's real and imaginary parts is

    ``I = Σ_j,k (∂λ_jk/∂θ)(∂λ_jk/∂θ)ᵀ / λ_jk``,

and any unbiased estimator's error covariance is at least ``I⁺``. Because
``∂λ/√λ = 2 s Re(conj(u) · A dθ)`` with ``u = Ψ/|Ψ|`` the unit phasor of the true far field and
``A = F · P · E_j``, the information is ``I x = 4 s² Aᴴ(u ⊙ Re(conj(u) ⊙ A x))`` (no division by
λ, so dark pixels are harmless), linear in ``s²`` and hence in the dose: it is computed once at
``s² = 1`` and divided by the dose scale for every dose.

What is computed, and its assumptions:

- **Parameters**: the complex object on every pixel the scan illuminates with at least
  ``free_threshold`` of the peak illumination ``Σ_j |P|²`` placed at the positions. Dimmer pixels
  are treated as known; knowing more can only lower a bound, so the result stays a valid lower
  bound (looser by a negligible amount: those pixels are outside the scored region).
- **Gauge**: a global phase ``o → o·e^{iα}`` leaves every λ unchanged, so ``I`` is singular along
  ``g = i·o``. The bound is taken on the complement of ``g`` (``I`` plus ``μ ggᵀ``, the
  right-hand sides projected off ``g``): the pseudo-inverse's convention. The scored quantities
  remove a constant phase anyway, so they do not depend on this choice.
- **Alignment**: the pipeline scores amplitude after a global scale (``a·mean(a_true)/mean(a)``)
  and phase after removing a least-squares plane (``eval.phase_alignment``). To first order these
  are linear maps ``L`` of the error, so the bound on the scored MSE is
  ``tr(L T I⁺ Tᵀ Lᵀ)/n`` over the ``n`` region pixels, ``T`` mapping real/imaginary errors to
  amplitude (``Re(conj(o)δ)/|o|``) or phase (``Im(conj(o)δ)/|o|²``) errors.
  ``eval.subpixel_registration`` is not modelled (it would lower the bound slightly).
- **Estimators**: unbiased, with the probe and positions known, Poisson counts and no other
  noise. A biased estimator (a network whose prior helps, a regularised reconstruction) can beat
  the bound; an arm that also learned from other patterns (the PINN with
  ``data.design=generalize``, trained on a second object) used more photons than the test scan
  whose bound this is.

Two ways to evaluate the trace: ``dense`` (the whole matrix, for up to :data:`DENSE_LIMIT` real
parameters; exact) and ``cg`` (matrix-free: Hutchinson's estimator with Rademacher probes, each
``I⁺h`` by conjugate gradients with a diagonal preconditioner; its standard error is reported).
Either also gives the bound per pixel (:attr:`LimitEstimate.maps`): the diagonal of
``L T I⁺ Tᵀ Lᵀ``, exact (``dense``) or by Hutchinson's diagonal estimator from the same probes
(``cg``), whose mean over the region is the bound on the MSE.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import tensorflow as tf

from ptycho import physics

__all__ = [
    "DENSE_LIMIT",
    "LimitEstimate",
    "alignment_maps",
    "dose_scale_of",
    "estimate_limit",
    "fisher_matrix",
    "fisher_operator",
    "fluence",
    "free_pixels",
    "illumination",
    "limit_cache_key",
    "load_or_estimate_limit",
]

log = logging.getLogger(__name__)

DENSE_LIMIT = 4096
"""Up to this many real parameters (twice the free pixels) the bound is computed densely."""
MIN_PROBES = 4
"""Hutchinson probes per part at least (``cg``)."""
LIMIT_VERSION = 2
"""Bumped when what :func:`estimate_limit` computes changes (invalidates cached limits)."""


@dataclass(frozen=True)
class LimitEstimate:
    """The Cramér–Rao bound on the scored MSEs of one scan at dose scale ``s² = 1``.

    Divide by a dataset's ``s²`` (:func:`dose_scale_of`) for its dose: :meth:`at_scale`.
    """

    amp_mse: float
    """Bound on ``amp_mse`` (amplitude units²) at ``s² = 1``."""
    phase_mse: float
    """Bound on ``phase_mse`` (rad²) at ``s² = 1``."""
    amp_mse_stderr: float
    """Standard error of the estimate (0 for ``dense``)."""
    phase_mse_stderr: float
    method: str
    """``dense`` or ``cg``."""
    samples: int
    """Hutchinson probes used for the part that needed most (0 for ``dense``)."""
    free_pixels: int
    region_pixels: int
    cg_iterations: int
    """Largest number of CG iterations one solve took (0 for ``dense``)."""
    seconds: float
    maps: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    """Per-pixel bounds at ``s² = 1``, each ``(h, w)`` float64 over the scored region:
    ``amp_variance`` (amplitude units²) and ``phase_variance`` (rad²), the diagonal of the
    aligned error's bound covariance, whose mean over the region is ``amp_mse``/``phase_mse``;
    ``amp_variance_stderr``/``phase_variance_stderr``, each pixel's standard error (0 for
    ``dense``; Hutchinson's diagonal estimator for ``cg``)."""

    def at_scale(self, scale: float) -> dict[str, float]:
        """``amp_mse_crb``, ``phase_mse_crb`` and their standard errors at dose scale ``s²``."""
        return {"amp_mse_crb": self.amp_mse / scale, "phase_mse_crb": self.phase_mse / scale,
                "amp_mse_crb_stderr": self.amp_mse_stderr / scale,
                "phase_mse_crb_stderr": self.phase_mse_stderr / scale}

    def maps_at_scale(self, scale: float) -> dict[str, np.ndarray]:
        """:attr:`maps` at dose scale ``s²`` (each divided by it), as float32."""
        return {name: (values / scale).astype(np.float32) for name, values in self.maps.items()}


def illumination(probe: np.ndarray, positions: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` float64 ``Σ_j |P|²`` placed at the positions: the illumination map, in probe
    intensity units (photons per pixel at ``s² = 1``).

    Args:
        probe: ``(N, N)`` complex probe.
        positions: ``(M, 2)`` float ``(x, y)`` patch centres, object pixels.
        shape: ``(H, W)`` of the object.
    """
    probe = np.asarray(probe)
    weights = np.broadcast_to(np.abs(probe).astype(np.float32) ** 2,
                              (1, len(positions), *probe.shape))
    placed = physics.place_patches(weights, np.asarray(positions, np.float32)[None], shape)
    return placed[0].numpy().astype(np.float64)


def fluence(probe: np.ndarray, positions: np.ndarray, shape: tuple[int, int], scale: float,
            region: tuple[slice, slice]) -> dict[str, float]:
    """The dose on the sample: photons incident per object pixel² over the scored region.

    Photons per pattern at a fixed scan step is not the sample's dose: a denser scan puts more
    photons on each pixel. The incident photons of pattern ``j`` are ``s²|P(r − r_j)|²`` per
    pixel (before the object), so the fluence map is ``s² Σ_j |P(r − r_j)|²``.

    Args:
        probe: ``(N, N)`` complex probe (photons per pixel at ``s² = 1``).
        positions: ``(M, 2)`` float ``(x, y)`` patch centres, object pixels.
        shape: ``(H, W)`` of the object.
        scale: the scan's dose scale ``s²`` (:func:`dose_scale_of`), times ``measured / expected``
            photons for the fluence at the measured counts.
        region: ``(rows, cols)`` slices of the scored region.

    Returns:
        ``fluence`` (the mean over the region) and ``fluence_p5`` (its 5th percentile: the
        least-exposed part), photons per pixel².
    """
    rows, cols = region
    exposure = scale * illumination(probe, positions, shape)[rows, cols]
    return {"fluence": float(exposure.mean()), "fluence_p5": float(np.percentile(exposure, 5))}


def free_pixels(probe: np.ndarray, positions: np.ndarray, shape: tuple[int, int], *,
                threshold: float = 1e-3) -> np.ndarray:
    """``(H, W)`` bool: pixels lit by at least ``threshold`` of the peak illumination (the
    parameters of the bound; the others are treated as known)."""
    lit = illumination(probe, positions, shape)
    return lit >= threshold * lit.max()


def dose_scale_of(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray,
                  dose: float) -> float:
    """The dose scale ``s²`` the simulation used for this scan: ``dose / mean_j Σ|F(P·o_j)|²``."""
    patches = physics.extract_patches(np.asarray(obj, np.complex64)[None],
                                      np.asarray(positions, np.float32)[None], len(probe))[0]
    intensities = physics.intensity(physics.far_field(physics.illuminate(probe, patches)))
    return float(physics.dose_scale(intensities, dose))


def _far_field_adjoint(field: tf.Tensor) -> tf.Tensor:
    """Adjoint (= inverse) of :func:`ptycho.physics.far_field`: ``N · IFFT2(ifftshift(F))``."""
    n = field.shape[-1]
    spectrum = tf.signal.ifftshift(field, axes=(-2, -1))
    return tf.signal.ifft2d(spectrum) * tf.constant(n, tf.complex64)


def _bilinear_taps(positions: np.ndarray, n: int, shape: tuple[int, int]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Flat object indices ``(M, N·N, 4)`` int64 and weights ``(M, N·N, 4)`` float32 of the
    bilinear extraction :func:`ptycho.physics.extract_patches` performs (same float32
    arithmetic, zero weight outside the object), as four taps per patch pixel."""
    height, width = shape
    start = np.asarray(positions, np.float32)[:, ::-1] - np.float32(n // 2)  # (M, 2): row, col
    base = np.floor(start)
    frac = (start - base).astype(np.float32)
    offsets = np.arange(n)
    rows = base[:, 0, None].astype(np.int64) + offsets  # (M, N)
    cols = base[:, 1, None].astype(np.int64) + offsets
    index, weight = [], []
    for dr, wr in ((0, 1 - frac[:, 0]), (1, frac[:, 0])):
        for dc, wc in ((0, 1 - frac[:, 1]), (1, frac[:, 1])):
            r = rows[:, :, None] + dr
            c = cols[:, None, :] + dc
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            index.append(np.where(inside, r * width + c, 0).reshape(len(start), -1))
            weight.append(np.where(inside, (wr[:, None, None] * wc[:, None, None]), 0)
                          .astype(np.float32).reshape(len(start), -1))
    return np.stack(index, axis=-1), np.stack(weight, axis=-1)


def fisher_operator(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray,
                    free: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The Fisher information at ``s² = 1`` as a function on the free pixels.

    A real parameter vector ``(Re δ, Im δ)`` is carried as one complex vector ``δ`` of the free
    pixels (row-major order of ``free``); the returned function maps ``δ`` (``(n,)`` or a batch
    ``(B, n)``) to ``I δ`` in the same form (real part: the rows of ``Re``; imaginary part: the
    rows of ``Im``), so the real inner product ``Re(vdot(a, b))`` is the Euclidean one of the real
    parameters.

    The true far field comes from :mod:`ptycho.physics` (extract → illuminate → far field).
    The perturbations are cut and placed by the same bilinear weights as four gathered taps per
    pixel: the separable matrices of ``extract_patches`` cost ``O(M·N·H·W)`` per product, too
    much at N=64 on a 256² object, the taps ``O(M·N²)``. tests/evaluation/test_limit.py checks
    the result against an independent float64 model.

    Args:
        obj: ``(H, W)`` complex true object.
        probe: ``(N, N)`` complex probe.
        positions: ``(M, 2)`` float ``(x, y)``.
        free: ``(H, W)`` bool parameter pixels.
    """
    shape = obj.shape
    n = probe.shape[0]
    obj_t = tf.constant(np.asarray(obj, np.complex64)[None])
    pos_t = tf.constant(np.asarray(positions, np.float32)[None])
    probe_t = tf.constant(np.asarray(probe, np.complex64))
    exit_far = physics.far_field(physics.illuminate(probe_t, physics.extract_patches(
        obj_t, pos_t, n)))[0]
    magnitude = tf.abs(exit_far)
    # The unit phasor of the true far field; 0 where the field vanishes (its pixels carry no
    # information about the phase of a perturbation there).
    phasor = tf.where(magnitude > 0, exit_far / tf.cast(tf.maximum(magnitude, 1e-30),
                                                         tf.complex64), tf.zeros_like(exit_far))
    taps, weights = _bilinear_taps(positions, n, shape)
    count = len(positions)
    taps_t = tf.constant(taps.reshape(-1))  # (M·N²·4,)
    weights_t = tf.constant(weights.reshape(-1), tf.complex64)
    free_index = np.flatnonzero(np.asarray(free).ravel())
    size = int(np.prod(shape))

    @tf.function(jit_compile=False, reduce_retracing=True)
    def apply(delta: tf.Tensor) -> tf.Tensor:
        """``(B, n)`` complex64 perturbations → ``(B, n)`` information times them."""
        batch = tf.shape(delta)[0]
        image = tf.transpose(tf.scatter_nd(free_index[:, None], tf.transpose(delta),
                                           [size, batch]))  # (B, H·W)
        taken = tf.gather(image, taps_t, axis=1) * weights_t  # (B, M·N²·4)
        patches = tf.reduce_sum(tf.reshape(taken, (batch, count, n, n, 4)), axis=-1)
        along = physics.far_field(physics.illuminate(probe_t, patches))
        whitened = tf.math.real(tf.math.conj(phasor) * along)  # ∂λ/(2 s √λ)
        back = _far_field_adjoint(phasor * tf.cast(whitened, tf.complex64))
        back = back * tf.math.conj(probe_t)  # (B, M, N, N)
        spread = tf.reshape(tf.repeat(tf.reshape(back, (batch, -1)), 4, axis=1)
                            * weights_t, (batch, -1))
        placed = tf.map_fn(
            lambda values: tf.math.unsorted_segment_sum(values, taps_t, size), spread,
            fn_output_signature=tf.complex64)  # the adjoint of the gather, per batch item
        return 4.0 * tf.gather(placed, free_index, axis=1)

    def fisher(delta: np.ndarray) -> np.ndarray:
        delta = np.asarray(delta)
        single = delta.ndim == 1
        out = apply(tf.constant(np.atleast_2d(delta).astype(np.complex64)))
        out = out.numpy().astype(np.complex128)
        return out[0] if single else out

    return fisher


def fisher_matrix(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray,
                  free: np.ndarray, *, batch: int = 32) -> np.ndarray:
    """The dense ``(2n, 2n)`` float64 Fisher matrix at ``s² = 1`` over the ``n`` free pixels,
    parameters ordered ``(Re δ_1..n, Im δ_1..n)``; built column by column from
    :func:`fisher_operator` (for small problems: ``2n`` applications, ``batch`` at a time)."""
    apply = fisher_operator(obj, probe, positions, free)
    count = int(np.count_nonzero(free))
    matrix = np.empty((2 * count, 2 * count))
    basis = np.concatenate([np.eye(count), 1j * np.eye(count)])  # (2n, n): Re then Im
    for first in range(0, 2 * count, batch):
        out = apply(basis[first:first + batch])
        matrix[:, first:first + batch] = np.concatenate([out.real, out.imag], axis=1).T
    return 0.5 * (matrix + matrix.T)  # symmetric up to float32 round-off


def alignment_maps(amplitude: np.ndarray, phase_alignment: str
                   ) -> tuple[Callable[[np.ndarray], np.ndarray],
                              Callable[[np.ndarray], np.ndarray]]:
    """The pipeline's alignments, linearised, as adjoint maps ``Lᵀ`` on region errors.

    Returns ``(amplitude Lᵀ, phase Lᵀ)`` acting on ``(n,)`` vectors over the region pixels
    (row-major). Amplitude: ``L = I − u 1ᵀ/n`` with ``u = a/mean(a)`` (the global-scale match of
    :func:`~ptycho.evaluation.alignment.align_amplitude`). Phase: the projection off the constant
    (``mean``), off the least-squares plane (``plane``) or the identity (``none``).
    """
    truth = np.asarray(amplitude, np.float64)
    ratio = (truth / truth.mean()).ravel()
    count = ratio.size

    def amplitude_adjoint(z: np.ndarray) -> np.ndarray:
        return z - np.ones(count) * (ratio @ z) / count

    if phase_alignment == "none":
        return amplitude_adjoint, lambda z: np.asarray(z, np.float64)
    rows, cols = np.indices(truth.shape, dtype=np.float64)
    design = np.ones((count, 1)) if phase_alignment == "mean" else np.stack(
        [np.ones(count), rows.ravel(), cols.ravel()], axis=1)
    basis, _ = np.linalg.qr(design)

    def phase_adjoint(z: np.ndarray) -> np.ndarray:
        return z - basis @ (basis.T @ z)

    return amplitude_adjoint, phase_adjoint


def _amplitude_forward(amplitude: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``L`` of the amplitude alignment (the transpose of :func:`alignment_maps`' first map):
    ``w ↦ w − u·mean(w)`` with ``u = a/mean(a)``, on ``(n,)`` region vectors."""
    ratio = (np.asarray(amplitude, np.float64) / np.mean(amplitude)).ravel()
    return lambda w: w - ratio * np.mean(w)


def _relative_stderr(values: list[float]) -> float:
    """Standard error of the mean over the mean (infinite for fewer than two values)."""
    if len(values) < 2 or np.mean(values) == 0:
        return float("inf")
    return float(np.std(values, ddof=1) / np.sqrt(len(values)) / abs(np.mean(values)))


def _cg(apply: Callable[[np.ndarray], np.ndarray], rhs: np.ndarray, precondition: np.ndarray, *,
        tolerance: float, max_iterations: int) -> tuple[np.ndarray, int]:
    """Preconditioned conjugate gradients for ``apply(x) = rhs`` in the real inner product of
    complex vectors. Written here because the operator is complex-carried but real-symmetric,
    which scipy's solvers (complex-Hermitian) do not express. Returns ``(x, iterations)``."""
    x = np.zeros_like(rhs)
    residual = rhs.copy()
    z = residual / precondition
    direction = z.copy()
    rz = float(np.vdot(residual, z).real)
    target = tolerance * float(np.linalg.norm(rhs))
    for iteration in range(1, max_iterations + 1):
        image = apply(direction)
        step = rz / float(np.vdot(direction, image).real)
        x += step * direction
        residual -= step * image
        if np.linalg.norm(residual) <= target:
            return x, iteration
        z = residual / precondition
        rz_next = float(np.vdot(residual, z).real)
        direction = z + (rz_next / rz) * direction
        rz = rz_next
    log.warning("limit: CG stopped at %d iterations (relative residual %.2g)", max_iterations,
                np.linalg.norm(residual) / max(np.linalg.norm(rhs), 1e-300))
    return x, max_iterations


def estimate_limit(
    obj: np.ndarray,
    probe: np.ndarray,
    positions: np.ndarray,
    region: tuple[slice, slice],
    *,
    phase_alignment: str = "plane",
    samples: int = 16,
    target_stderr: float = 0.01,
    seed: int = 0,
    free_threshold: float = 1e-3,
    method: str = "auto",
    tolerance: float = 1e-4,
    max_iterations: int = 2000,
) -> LimitEstimate:
    """The Cramér–Rao bound on the pipeline's ``amp_mse`` and ``phase_mse`` at ``s² = 1``.

    Args:
        obj: ``(H, W)`` complex true object.
        probe: ``(N, N)`` complex probe.
        positions: ``(M, 2)`` float ``(x, y)`` of the scored scan.
        region: ``(rows, cols)`` slices of the scored region (the evaluation's).
        phase_alignment: as ``eval.phase_alignment``.
        samples: Hutchinson probes per part at most (``cg`` only).
        target_stderr: stop probing once the relative standard error is below this (after
            :data:`MIN_PROBES`); a large region averages so many pixels per probe that a few do.
        seed: seed of the probes.
        free_threshold: illumination fraction below which pixels count as known.
        method: ``dense``, ``cg`` or ``auto`` (dense up to :data:`DENSE_LIMIT` parameters).
        tolerance: CG relative residual.
        max_iterations: CG iterations per solve at most.
    """
    start = time.perf_counter()
    obj = np.asarray(obj, np.complex128)
    lit = illumination(probe, positions, obj.shape)  # once: the free pixels and the preconditioner
    free = lit >= free_threshold * lit.max()  # as free_pixels
    rows, cols = region
    in_region = np.zeros(obj.shape, bool)
    in_region[rows, cols] = True
    scored = in_region & free  # a region pixel that is not free is known: zero variance
    order = np.full(obj.shape, -1)
    order[free] = np.arange(int(free.sum()))
    region_index = order[rows, cols].ravel()  # -1: known pixel
    count, region_count = int(free.sum()), int(in_region.sum())
    if not scored.any():
        raise ValueError("limit: no pixel of the scored region is illuminated")
    truth = obj[rows, cols].ravel()
    amp_adjoint, phase_adjoint = alignment_maps(np.abs(obj[rows, cols]), phase_alignment)
    amp_dir = truth / np.abs(truth)  # δ ↦ Re(conj(amp_dir) δ) is the amplitude error
    phase_dir = 1j * truth / np.abs(truth) ** 2
    gauge = np.where(free, 1j * obj, 0)[free]
    gauge /= np.linalg.norm(gauge)

    def representer(weights: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Complex free-pixel vector ``h`` with ``Re(vdot(h, δ)) = Σ_p weights_p T_p(δ)``."""
        h = np.zeros(count, np.complex128)
        known = region_index < 0
        np.add.at(h, region_index[~known], (weights * direction)[~known])
        return h - gauge * np.vdot(gauge, h).real  # off the gauge

    apply = fisher_operator(obj, probe, positions, free)
    diagonal = 2.0 * lit[free]
    shift = float(np.median(diagonal))  # μ: the gauge direction's stand-in eigenvalue

    def regularised(x: np.ndarray) -> np.ndarray:
        return apply(x) + shift * gauge * np.vdot(gauge, x).real

    use_dense = method == "dense" or (method == "auto" and 2 * count <= DENSE_LIMIT)
    if method not in ("auto", "dense", "cg"):
        raise ValueError(f"limit method must be auto, dense or cg, got {method!r}")
    results: dict[str, tuple[float, float]] = {}
    maps: dict[str, np.ndarray] = {}
    shape = obj[rows, cols].shape
    lit_index = np.flatnonzero(region_index >= 0)  # region pixels that are parameters
    worst = used = 0
    if use_dense:
        matrix = fisher_matrix(obj, probe, positions, free)
        real_gauge = np.concatenate([gauge.real, gauge.imag])
        inverse = np.linalg.inv(matrix + shift * np.outer(real_gauge, real_gauge))
        for part, adjoint, direction in (("amp", amp_adjoint, amp_dir),
                                         ("phase", phase_adjoint, phase_dir)):
            columns = np.stack([representer(adjoint(e), direction)
                                for e in np.eye(region_count)], axis=1)
            real = np.concatenate([columns.real, columns.imag])
            diagonal_bound = np.einsum("ij,ij->j", real, inverse @ real)  # per region pixel
            results[part] = (float(diagonal_bound.sum()) / region_count, 0.0)
            maps[f"{part}_variance"] = diagonal_bound.reshape(shape)
            maps[f"{part}_variance_stderr"] = np.zeros(shape)
    else:
        rng = np.random.default_rng(seed)
        amp_forward = _amplitude_forward(np.abs(obj[rows, cols]))
        for part, adjoint, forward, direction in (
                ("amp", amp_adjoint, amp_forward, amp_dir),
                ("phase", phase_adjoint, phase_adjoint, phase_dir)):  # a projection: Lᵀ = L
            values: list[float] = []
            diagonals: list[np.ndarray] = []
            for k in range(samples):
                if k >= MIN_PROBES and _relative_stderr(values) < target_stderr:
                    break  # precise enough: large regions average over many pixels per probe
                z = rng.choice([-1.0, 1.0], region_count)
                h = representer(adjoint(z), direction)
                x, iterations = _cg(regularised, h, diagonal + 1e-12 * diagonal.max(),
                                    tolerance=tolerance, max_iterations=max_iterations)
                worst = max(worst, iterations)
                # Hutchinson's diagonal (Bekas, Kokiopoulou & Saad 2007): z ⊙ (L T I⁺ Tᵀ Lᵀ z);
                # its mean over the region is exactly this probe's trace sample below
                x = x - gauge * np.vdot(gauge, x).real
                scored_error = np.zeros(region_count)
                scored_error[lit_index] = (np.conj(direction[lit_index])
                                           * x[region_index[lit_index]]).real
                diagonals.append(z * forward(scored_error))
                values.append(float(np.vdot(h, x).real) / region_count)
                log.info("limit: %s probe %d (at most %d): %.4g (%d CG iterations)", part,
                         k + 1, samples, values[-1], iterations)
            used = max(used, len(values))
            results[part] = (float(np.mean(values)),
                             float(np.std(values, ddof=1) / np.sqrt(len(values)))
                             if len(values) > 1 else float("nan"))
            stack = np.array(diagonals)
            maps[f"{part}_variance"] = stack.mean(axis=0).reshape(shape)
            maps[f"{part}_variance_stderr"] = (
                stack.std(axis=0, ddof=1) / np.sqrt(len(stack)) if len(stack) > 1
                else np.full(region_count, np.nan)).reshape(shape)
    return LimitEstimate(
        amp_mse=results["amp"][0], phase_mse=results["phase"][0],
        amp_mse_stderr=results["amp"][1], phase_mse_stderr=results["phase"][1],
        method="dense" if use_dense else "cg", samples=0 if use_dense else used,
        free_pixels=count, region_pixels=region_count, cg_iterations=worst,
        seconds=time.perf_counter() - start, maps=maps,
    )


def limit_cache_key(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray,
                    region: tuple[slice, slice], **settings: object) -> str:
    """sha256 (hex, 24 chars) of everything :func:`estimate_limit` depends on."""
    digest = hashlib.sha256()
    for array in (obj, probe, positions):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    rows, cols = region
    digest.update(json.dumps({"region": [rows.start, rows.stop, cols.start, cols.stop],
                              "version": LIMIT_VERSION, **settings},
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def load_or_estimate_limit(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray,
                           region: tuple[slice, slice], cache_dir: str | Path | None,
                           **settings) -> tuple[LimitEstimate, bool]:
    """:func:`estimate_limit`, reused from ``cache_dir/limits/<key>.json`` when there (it does
    not depend on the dose, so a dose sweep computes it once). Returns ``(limit, cache_hit)``."""
    path = None
    if cache_dir is not None:
        key = limit_cache_key(obj, probe, positions, region, **settings)
        path = Path(cache_dir) / "limits" / f"{key}.json"
        if path.is_file() and path.with_suffix(".npz").is_file():
            try:
                with np.load(path.with_suffix(".npz")) as stored:
                    maps = {name: stored[name] for name in stored.files}
                return LimitEstimate(**json.loads(path.read_text()), maps=maps), True
            except (OSError, ValueError, TypeError, zipfile.BadZipFile, zlib.error) as error:
                # damaged (e.g. a writer killed mid-way): compute it again
                log.warning("limit cache entry %s unreadable (%s): recomputing", path, error)
    limit = estimate_limit(obj, probe, positions, region, **settings)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        scalars = {f.name: getattr(limit, f.name) for f in fields(limit) if f.name != "maps"}
        # The maps first (the json marks the entry complete), each through a temporary file of
        # this process's own: parallel jobs of one scan compute the same entry at once, and a
        # shared temporary name would let one rename the other's half-written file.
        unique = f".{os.getpid()}.{threading.get_ident()}.part"
        partial = path.with_suffix(unique + ".npz")
        np.savez_compressed(partial, **limit.maps)
        partial.replace(path.with_suffix(".npz"))
        partial = path.with_suffix(unique)
        partial.write_text(json.dumps(scalars, indent=2))
        partial.replace(path)
    return limit, False
