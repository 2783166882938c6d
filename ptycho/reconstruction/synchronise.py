"""Phase synchronisation: the constant phase of each patch, which no diffraction pattern
measures, chosen before the patches are stitched (docs/physics.md §8.1).

A pattern fixes its patch only up to a constant phase (``|F(P·O·e^{iθ})|² = |F(P·O)|²``), so
patches reconstructed one group at a time carry offsets of their own. :func:`phase_offsets`
estimates them from the overlaps alone (angular synchronisation); :func:`likelihood_offsets`
then by the measured counts of the whole scan; :func:`synchronise_and_stitch` is the step a
network arm runs: offsets, then the stitch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from scipy.optimize import OptimizeResult, minimize
from scipy.signal import correlate2d
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import LinearOperator, eigsh
from scipy.spatial import cKDTree
from scipy.stats import circstd

from ptycho import physics
from ptycho.checks import check_choice, check_positive_int
from ptycho.config import PhaseSync, StitchWeighting
from ptycho.reconstruction.stitch import (
    check_centres,
    check_stitch_geometry,
    check_weight,
    stitch,
    stitch_values,
)
from ptycho.runtime import one_blas_thread

__all__ = ["Stitched", "likelihood_offsets", "phase_offsets", "synchronise_and_stitch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Stitched:
    """A network's object.

    Attributes:
        obj: ``(H, W)`` complex64 stitched object on the scan's grid.
        alternatives: other objects formed on the way, by name, each ``(H, W)`` complex64:
            ``overlap_sync`` (the overlap offsets' stitch, with ``phase_sync=likelihood``).
        metrics: ``phase_sync_offset_std`` (the offsets' circular spread, radians); with
            ``likelihood`` also ``phase_sync_nll_gain_per_photon`` (nats the counts gained over
            the overlap offsets), ``phase_sync_iterations``, ``phase_sync_converged`` (1 or 0),
            ``phase_sync_gradient_norm`` and ``phase_sync_seconds`` (:func:`likelihood_offsets`);
            ``phase_sync_overlap_seconds``: :func:`phase_offsets`' time.
    """

    obj: np.ndarray
    alternatives: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def synchronise_and_stitch(
    patches: np.ndarray,
    positions: np.ndarray,
    object_shape: tuple[int, int],
    *,
    probe: np.ndarray,
    keep_fraction: float,
    phase_sync: str,
    stitch_weighting: str,
    counts: np.ndarray | None = None,
    patterns: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> Stitched:
    """A network's patches → its object: each patch's constant phase set, then the stitch.

    Args:
        patches: ``(K, N, N)`` complex64 predicted object patches.
        positions: ``(K, 2)`` ``(x, y)`` pixels where they belong on the object grid.
        object_shape: ``(H, W)`` of the object grid.
        probe: ``(N, N)`` complex probe the patterns were measured with.
        keep_fraction: the stitch's central part (:func:`~.stitch.check_stitch_geometry`).
        phase_sync: ``overlap`` (:func:`phase_offsets`, weighted by the probe intensity),
            ``likelihood`` (from there by the measured ``counts``: :func:`likelihood_offsets`)
            or ``none`` (:class:`~ptycho.config.PhaseSync`).
        stitch_weighting: ``probe`` (each patch pixel weighted by ``|probe|²``) or ``uniform``
            (the central parts, evenly).
        counts: ``(K, N, N)`` photons measured at each patch's position (``likelihood``).
        patterns: ``(K,)`` index of the measured pattern behind each patch (g > 1 groups share
            patterns, each counted once by the likelihood); ``None``: one per patch.
        mask: ``(N, N)`` bool, ``True`` where the detector measures (the likelihood reads only
            those pixels); ``None``: all.

    Raises:
        ValueError: bad shapes, a missing probe or counts, a scan too sparse to stitch.
    """
    patches = np.asarray(patches)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"patches must have shape (K, N, N), got {patches.shape}")
    N = patches.shape[-1]
    keep = check_stitch_geometry(positions, N=N, keep_fraction=keep_fraction)
    weighting = check_choice(stitch_weighting, StitchWeighting, "stitch_weighting")
    mode = check_choice(phase_sync, PhaseSync, "phase_sync")
    if mode == PhaseSync.auto:  # the job's config resolves it (it depends on train.epochs)
        raise ValueError("phase_sync='auto' is resolved by the job's config (JobConfig): pass "
                         "'likelihood', 'overlap' or 'none'")
    if probe is None or np.shape(probe) != (N, N):
        raise ValueError(f"the stitch needs the ({N}, {N}) probe, got "
                         f"{None if probe is None else np.shape(probe)}")
    intensity = np.abs(np.asarray(probe)) ** 2
    if mode == PhaseSync.likelihood and np.shape(counts) != patches.shape:
        raise ValueError(f"phase_sync='likelihood' needs the measured counts {patches.shape}, "
                         f"got {None if counts is None else np.shape(counts)}")
    weight = intensity if weighting == StitchWeighting.probe else None

    def stitched(offsets: np.ndarray | None) -> np.ndarray:
        rotated = (patches if offsets is None else
                   (patches * np.exp(1j * offsets)[:, None, None]).astype(np.complex64))
        return stitch(rotated, positions, object_shape, keep=keep, weight=weight)[0]

    if mode == PhaseSync.none:
        return Stitched(stitched(None))
    began = time.perf_counter()
    offsets = phase_offsets(patches, positions, intensity)
    alternatives, metrics = {}, {"phase_sync_overlap_seconds": time.perf_counter() - began}
    if mode == PhaseSync.likelihood:
        alternatives["overlap_sync"] = stitched(offsets)
        offsets, info = likelihood_offsets(patches, positions, probe, counts, object_shape,
                                           keep=keep, weight=weight, initial=offsets,
                                           patterns=patterns, mask=mask)
        metrics.update({f"phase_sync_{key}": float(info[key]) for key in (
            "nll_gain_per_photon", "iterations", "converged", "gradient_norm", "seconds")})
    metrics["phase_sync_offset_std"] = float(circstd(offsets, high=np.pi, low=-np.pi))
    return Stitched(stitched(offsets), alternatives, metrics)

_DENSE_SYNC = 64
"""Components of at most this many patches are synchronised with a dense eigensolver."""
_MIN_OVERLAP = 0.05
"""Two patches inform each other's phase when their weighted overlap is at least this fraction
of a patch's own (``Σ w_k w_l ≥ 0.05 Σ w²``)."""


def phase_offsets(
    patches: np.ndarray,
    positions: np.ndarray,
    weight: np.ndarray,
    *,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Constant phases that make overlapping patches agree (angular synchronisation).

    Each patch is known only up to ``e^{iθ_k}`` (a diffraction pattern does not see a constant
    phase), so a reconstruction made one pattern (``g = 1``) or one group at a time has offsets
    the loss never constrained; averaging such patches blurs the stitched phase at the scale of
    the scan step. This finds the ``θ`` that maximise the weighted agreement of all patches with
    their normalised overlap-add, ``Σ_k Σ_x w_k(x) Re[conj(e^{iθ_k} P_k(x)) O_θ(x)]``: the
    leading eigenvector of the Hermitian overlap matrix ``A_kl = Σ_x w_k conj(P_k) w_l P_l / Σ_j
    w_j`` (Singer 2011's spectral relaxation), solved per connected part of the scan with
    ARPACK (deterministic start). Hand-written: no maintained library synchronises patches;
    scipy supplies the eigensolver and the graph.

    For speed the patches are first moved by their sub-pixel remainders (bilinear,
    :func:`ptycho.physics.translate`) onto whole-pixel positions, where overlaps are index
    arithmetic. Only the returned offsets are used; the stitch itself stays sub-pixel.

    Args:
        patches: ``(K, N, N)`` complex object patches (dimensionless transmission).
        positions: ``(K, 2)`` float ``(x, y)`` patch centres, pixels of the object grid.
        weight: ``(N, N)`` float ≥ 0 trust in each patch pixel, e.g. the probe intensity
            ``|probe|²``: the data constrain a pixel in proportion to the light it got.
        chunk_size: patches moved per step (memory bound).

    Returns:
        ``(K,)`` float64 offsets, radians in ``(-π, π]``: multiply patch ``k`` by ``e^{iθ_k}``.
        Each connected part's circular mean is 0 (a global phase is not observable either);
        a patch that overlaps no other (see :data:`_MIN_OVERLAP`) keeps its phase (offset 0).

    Raises:
        ValueError: mismatched shapes, a negative or all-zero weight.
    """
    patches = np.asarray(patches)
    positions = check_centres(positions)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"patches must have shape (K, N, N), got {patches.shape}")
    K, N = patches.shape[0], patches.shape[1]
    if positions.shape[0] != K:
        raise ValueError(f"positions must have shape ({K}, 2) to match the patches, "
                         f"got {positions.shape}")
    weight = check_weight(weight, N)
    chunk_size = check_positive_int(chunk_size, "chunk_size")

    whole = np.round(positions).astype(np.int64)
    remainder = (positions - whole).astype(np.float32)  # moves each patch onto whole pixels
    weighted = np.empty((K, N, N), np.complex64)
    moved_weight = np.empty((K, N, N), np.float32)
    unit = (weight / weight.max()).astype(np.complex64)
    for first in range(0, K, chunk_size):
        part = slice(first, first + chunk_size)
        count = len(patches[part])
        images = np.concatenate([patches[part].astype(np.complex64),
                                 np.broadcast_to(unit, (count, N, N))])
        shifts = np.concatenate([remainder[part], remainder[part]])
        moved = physics.translate(tf.constant(images), tf.constant(shifts)).numpy()
        moved_weight[part] = np.maximum(moved[count:].real, 0.0)
        weighted[part] = moved_weight[part] * moved[:count]

    corner = whole - N // 2
    corner -= corner.min(axis=0)
    width = int(corner[:, 0].max()) + N
    size = (int(corner[:, 1].max()) + N) * width
    rows, cols = np.mgrid[:N, :N]
    index = ((corner[:, 1, None, None] + rows) * width + corner[:, 0, None, None] + cols)

    offsets = np.zeros(K)
    for members in _overlapping_parts(whole, weight):
        if len(members) < 2:
            continue
        offsets[members] = _synchronise(weighted[members], moved_weight[members],
                                        index[members].ravel(), size)
    return offsets


def _overlapping_parts(whole: np.ndarray, weight: np.ndarray) -> list[np.ndarray]:
    """Indices of each connected part of the scan: patches linked by weighted overlaps of at
    least :data:`_MIN_OVERLAP` of a patch's own (so a scan whose illuminated discs do not touch
    is not tied together by the faint tails of the probe)."""
    N = weight.shape[0]
    overlap = correlate2d(weight, weight, mode="full")  # [N-1+dy, N-1+dx]: Σ w(x) w(x+d)
    K = len(whole)
    pairs = cKDTree(whole).query_pairs(r=N - 1, p=np.inf, output_type="ndarray")
    if len(pairs):
        d = whole[pairs[:, 1]] - whole[pairs[:, 0]]
        linked = overlap[N - 1 + d[:, 1], N - 1 + d[:, 0]] >= _MIN_OVERLAP * overlap.max()
        pairs = pairs[linked]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(K, K))
    count, labels = connected_components(graph, directed=False)
    return [np.flatnonzero(labels == label) for label in range(count)]


def _synchronise(weighted: np.ndarray, weight: np.ndarray, index: np.ndarray,
                 size: int) -> np.ndarray:
    """Offsets of one connected part: phases of the leading eigenvector of ``A`` (see
    :func:`phase_offsets`), given ``w·P (K, N, N)``, ``w (K, N, N)`` and each pixel's flat index
    on the whole-pixel canvas.

    ``A v`` is one scatter-add onto the canvas and one gather back, compiled by XLA (in
    complex128: complex64 leaves offsets 2e-4 rad off on exact whole-pixel patches), about 20
    products for ARPACK: :func:`phase_offsets` takes 18 s for 2048 N=128 patches, where NumPy's
    ``bincount`` products took 45 s.
    """
    K = len(weighted)
    inverse = 1.0 / np.maximum(np.bincount(index, weight.ravel(), size), 1e-12)
    if K <= _DENSE_SYNC or K < 3:  # (ARPACK needs at least 3) a small part: the matrix itself
        flat = weighted.reshape(K, -1).astype(np.complex128)
        pixels = index.reshape(K, -1)  # a patch's pixels are distinct canvas pixels
        columns = []
        for k in range(K):  # A e_k: patch k placed alone, normalised, met by every patch
            canvas = np.zeros(size, np.complex128)
            canvas[pixels[k]] = flat[k] * inverse[pixels[k]]
            columns.append((np.conj(flat) * canvas[pixels]).sum(axis=1))
        matrix = np.stack(columns, axis=1)
        vector = np.linalg.eigh((matrix + matrix.conj().T) / 2)[1][:, -1]
    else:
        flat = tf.constant(weighted.reshape(K, -1).astype(np.complex128))
        pixels = tf.constant(index.astype(np.int32))
        scale = tf.constant(inverse.astype(np.complex128))

        @tf.function(jit_compile=True, autograph=False)
        def product(v: tf.Tensor) -> tf.Tensor:
            canvas = tf.math.unsorted_segment_sum(tf.reshape(flat * v[:, None], (-1,)),
                                                  pixels, size) * scale
            return tf.reduce_sum(tf.math.conj(flat) * tf.reshape(tf.gather(canvas, pixels),
                                                                 (K, -1)), axis=1)

        def matvec(v: np.ndarray) -> np.ndarray:
            return product(tf.constant(np.asarray(v, np.complex128).reshape(K))).numpy()

        operator = LinearOperator((K, K), matvec=matvec, dtype=np.complex128)
        with one_blas_thread():
            vector = eigsh(operator, k=1, which="LA", v0=np.ones(K, np.complex128),
                           tol=1e-8)[1][:, 0]
    theta = np.angle(vector)
    return np.angle(np.exp(1j * (theta - np.angle(np.exp(1j * theta).sum()))))


def likelihood_offsets(
    patches: np.ndarray,
    positions: np.ndarray,
    probe: np.ndarray,
    counts: np.ndarray,
    object_shape: tuple[int, int],
    *,
    keep: int,
    weight: np.ndarray | None,
    initial: np.ndarray | None = None,
    patterns: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    max_iterations: int = 200, relative_tolerance: float = 1e-2, window: int = 10,
) -> tuple[np.ndarray, dict]:
    """Constant phases of the patches chosen by the measured counts (maximum likelihood).

    :func:`phase_offsets` makes patches agree where they overlap: at the edges of the lit discs,
    where a network's patch is least constrained (a g=1 network shrinks the contrast there, and
    the stitched phase comes out too flat). This asks the data instead: the ``θ`` under which
    the stitched object ``O_θ`` (the normalised overlap-add of ``e^{iθ_k} P_k`` over every pixel
    a patch weighs), cut again at every scan position, best explains every measured pattern,

        ``min_θ Σ_k Σ_q [s² I_kq(θ) − n_kq log(s² I_kq(θ))]``,  ``I_k(θ) = |A O_θ|²_k``,

    the photon scale ``s²`` profiled out (a network's amplitude scale does not matter). Only
    the ``K`` constants are fitted, against ``K·N²`` counts; the patches stay the network's.

    The far fields are linear in ``z = e^{iθ}`` (:class:`_StitchedFields`): value and gradient
    are one product with that map and one with its adjoint, compiled by XLA. L-BFGS (scipy)
    runs from ``initial`` in variables scaled by an estimate of the Fisher diagonal, and has
    converged when the last ``window`` iterations gained less than ``relative_tolerance`` of
    the NLL gained since the start. The objective has a long flat tail: the rule stops at 99.6%
    of a long run's gain on the quickstart, 94% at paper scale, and the tail moves no score by
    more than about 0.01 (docs/results/2026-12-07-pace.md; Gauss–Newton and a coarse-to-fine
    basis measured no faster). Hand-written: no library stitches under a Poisson likelihood.

    Args:
        patches: ``(K, N, N)`` complex object patches (dimensionless transmission).
        positions: ``(K, 2)`` float ``(x, y)`` patch centres, pixels of the object grid.
        probe: ``(N, N)`` complex probe the patterns were measured with.
        counts: ``(K, N, N)`` photons measured at each patch's position (DC at the centre).
        object_shape: ``(H, W)`` of the object grid.
        keep, weight: the stitch's (:func:`stitch`).
        initial: ``(K,)`` starting offsets (radians), e.g. :func:`phase_offsets`'; ``None``: 0.
        patterns: ``(K,)`` int index of the measured pattern behind each patch (a pattern in
            several groups, g > 1, counts once); ``None``: every patch is its own pattern.
        mask: ``(N, N)`` bool measured pixels (the others add nothing); ``None``: all.
        max_iterations: L-BFGS iterations at most.
        relative_tolerance, window: the convergence test above.

    Returns:
        ``(offsets (K,) float64 radians with circular mean 0, info)``; ``info`` holds
        ``nll_gain_per_photon`` (the Poisson NLL per photon at ``initial`` minus at the result,
        ≥ 0 nats), ``iterations``, ``converged`` (1.0 when it ended before the cap: the test
        above stopped it, or L-BFGS's line search could no longer lower the float32 objective;
        0.0 at the cap), ``gradient_norm`` (of the NLL per photon in ``θ``, at the result),
        ``evaluations`` and ``seconds``; ``trace`` lists ``(iteration, NLL per photon,
        gradient norm)`` from iteration 0 (the start).

    Raises: ValueError: mismatched shapes, negative counts, counts without photons, a bad
        tolerance.
    """
    patches, positions, counts, theta0, patterns = _check_sync_inputs(
        patches, positions, probe, counts, initial, patterns)
    max_iterations = check_positive_int(max_iterations, "max_iterations")
    window = check_positive_int(window, "window")
    if not 0 < relative_tolerance < 1:
        raise ValueError(f"relative_tolerance must be in (0, 1), got {relative_tolerance}")
    began = time.perf_counter()
    fields = _StitchedFields(patches, positions, probe, counts, object_shape, keep=keep,
                             weight=weight, patterns=patterns, mask=mask)
    theta, info = _minimise(fields, theta0, max_iterations, relative_tolerance, window)
    theta = np.angle(np.exp(1j * (theta - np.angle(np.exp(1j * theta).sum()))))
    info["seconds"] = time.perf_counter() - began
    log.info("likelihood phase sync: %d patches, %d iterations (%s), NLL per photon %.6f -> "
             "%.6f, gradient norm %.2g -> %.2g, %d evaluations in %.1fs", len(patches),
             info["iterations"], "converged" if info["converged"] else "stopped at the cap",
             info["trace"][0][1], info["trace"][-1][1], info["trace"][0][2],
             info["gradient_norm"], info["evaluations"], info["seconds"])
    return theta, info


class _StitchedFields:
    """The map ``z ↦ A O(z)``: unit phasors ``z (K,)`` of the patches → far fields ``(J, N, N)``
    complex64 of the measured patterns of the object stitched from ``z_k P_k``
    (``O(z) = Σ_k E_kᴴ(w z_k P_k) / Σ_k E_kᴴ w``), linear in ``z``, and the profiled Poisson
    NLL per photon with its gradient in ``θ`` through it."""

    def __init__(self, patches: np.ndarray, positions: np.ndarray, probe: np.ndarray,
                 counts: np.ndarray, object_shape: tuple[int, int], *, keep: int,
                 weight: np.ndarray | None, patterns: np.ndarray,
                 mask: np.ndarray | None = None) -> None:
        N = patches.shape[1]
        # None for a detector that measures every pixel: the compiled graph (and its rounding)
        # is then the one of the ideal experiment, number for number
        self.mask = (None if mask is None or np.all(mask)
                     else tf.constant(np.asarray(mask, np.float32)))
        values = stitch_values(N, keep, weight)[1]
        if weight is None:
            # The uniform stitch defines only the central parts; the forward model also needs
            # the rest of each lit disc: filled, at 1e-6 of the weight, by the probe-weighted
            # average.
            light = np.abs(np.asarray(probe)) ** 2
            values = (values + 1e-6 * light / light.max()).astype(np.float32)
        self.probe = tf.constant(np.asarray(probe, np.complex64))
        self.placing = physics.PatchBlocks(positions, N, object_shape)
        self.weighted = tf.constant((patches * values).astype(np.complex64))
        # Each weighted patch spread onto its (N+1)² block once: a product then scatters or
        # gathers blocks, with no taps to apply.
        self.blocks = self.placing.taps_adjoint(self.weighted[None])[0]
        # Every pixel some patch weighs, not only stitch()'s covered centres: a pattern at the
        # edge of the scan also lit pixels only its own patch reaches.
        denominator = self.placing.spread(
            tf.broadcast_to(tf.constant(values), (1, len(patches), N, N)))[0].numpy()
        covered = denominator > 0
        inverse = np.where(covered, 1.0 / np.where(covered, denominator, 1.0), 0.0)
        self.inverse = tf.constant(inverse.astype(np.complex64))
        # Each measured pattern counts once, however many groups (g > 1) reconstructed it.
        first_seen = np.sort(np.unique(patterns, return_index=True)[1])
        self.measuring = physics.PatchBlocks(positions[first_seen], N, object_shape)
        measured = counts[first_seen].astype(np.float64)
        self.photons = float(measured.sum())
        if self.photons <= 0:
            raise ValueError("counts hold no photons: no likelihood to choose offsets by")
        self.counts = tf.constant(measured.astype(np.float32))
        # The Fisher diagonal up to 2 s²/photons (Parseval; the bilinear taps' smearing and the
        # far-field phases neglected): Σ_p |w P_k|² · light/denominator² at the patch's pixels.
        intensity = np.abs(np.asarray(probe, np.complex64)) ** 2
        light = self.measuring.spread(tf.broadcast_to(
            tf.constant(intensity), (1, len(first_seen), N, N)))[0].numpy()
        exposure = np.minimum(light * inverse.astype(np.float64) ** 2, 1e30).astype(np.float32)
        self.reach = tf.reduce_sum(
            tf.abs(self.weighted) ** 2 * self.placing.cut(tf.constant(exposure[None]))[0],
            axis=(1, 2)).numpy().astype(np.float64)
        self.evaluations = 0
        # XLA fuses the gathers, scatters and FFTs (2-3x faster on a CPU); no autograph: there
        # is no Python control flow to convert.
        self._compiled = tf.function(self._value_and_gradient, jit_compile=True,
                                     reduce_retracing=True, autograph=False)

    def forward(self, z: tf.Tensor) -> tf.Tensor:
        """``(J, N, N)`` complex64 far fields of ``z (K,)`` complex64."""
        obj = self.placing.scatter((self.blocks * z[:, None])[None])[0] * self.inverse
        return physics.far_field(physics.illuminate(self.probe, self.measuring.cut(obj[None])[0]))

    def adjoint(self, fields: tf.Tensor) -> tf.Tensor:
        """``(K,)`` complex64 ``Aᴴ`` of far fields ``(J, N, N)``."""
        back = physics.far_field_adjoint(fields) * tf.math.conj(self.probe)
        canvas = self.measuring.spread(back[None])[0] * self.inverse
        return tf.reduce_sum(tf.math.conj(self.blocks) * self.placing.gather(canvas[None])[0],
                             axis=1)

    def _value_and_gradient(self, theta: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The NLL per photon at ``θ (K,)`` float64 and its gradient: ``∂I/∂θ_k = 2 Re(conj(u)
        · i z_k A e_k)``, so ``∇ = −2 Im(z ⊙ conj(Aᴴ(w ⊙ u)))`` with ``w = (s² − n/I)/photons``
        (written out: one adjoint product instead of autodiff's graph)."""
        z = tf.cast(tf.complex(tf.cos(theta), tf.sin(theta)), tf.complex64)
        fields = self.forward(z)
        intensities = self._measured(tf.abs(fields) ** 2)  # unmeasured pixels: I = 0, n = 0
        light = tf.reduce_sum(tf.cast(intensities, tf.float64))
        value = physics.profiled_poisson_nll_per_photon(self.counts, intensities)
        scale = tf.cast(self.photons / light, tf.float32)
        weights = self._measured(scale - self.counts / (intensities + 1e-30)) / np.float32(
            self.photons)
        h = self.adjoint(tf.cast(weights, tf.complex64) * fields)
        return value, tf.cast(-2.0 * tf.math.imag(z * tf.math.conj(h)), tf.float64)

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """``(NLL per photon, ∇_θ)`` at ``θ (K,)`` radians."""
        self.evaluations += 1
        value, gradient = self._compiled(tf.constant(theta, tf.float64))
        return float(value), gradient.numpy()

    def scale(self, theta: np.ndarray) -> float:
        """The profiled photon scale ``s²`` at ``θ``."""
        z = tf.constant(np.exp(1j * theta).astype(np.complex64))
        return self.photons / float(tf.reduce_sum(tf.cast(
            self._measured(tf.abs(self.forward(z)) ** 2), tf.float64)))

    def _measured(self, pixels: tf.Tensor) -> tf.Tensor:
        """``pixels (J, N, N)`` on the measured pixels, 0 on the others."""
        return pixels if self.mask is None else pixels * self.mask


def _minimise(fields: _StitchedFields, theta0: np.ndarray, max_iterations: int,
              relative_tolerance: float, window: int) -> tuple[np.ndarray, dict]:
    """L-BFGS on ``θ`` scaled by the Fisher diagonal's square root (see
    :func:`likelihood_offsets`); returns ``(θ, info)``."""
    diagonal = 2.0 * fields.scale(theta0) / fields.photons * fields.reach
    unit = np.sqrt(np.maximum(diagonal, 1e-12 * max(float(diagonal.max()), 1e-300)))
    unit /= np.median(unit)  # φ = unit·θ: each offset in units of its own curvature
    latest: dict[str, np.ndarray | float] = {}

    def objective(phi: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = fields.value_and_gradient(phi / unit)
        latest.update(value=value, gradient=gradient)
        return value, gradient / unit

    start, gradient0 = fields.value_and_gradient(theta0)
    trace = [(0, start, float(np.linalg.norm(gradient0)))]
    began = time.perf_counter()

    def progress(intermediate_result: OptimizeResult) -> None:
        trace.append((len(trace), float(intermediate_result.fun),
                      float(np.linalg.norm(latest["gradient"]))))
        iteration = trace[-1][0]
        if iteration % 25 == 0:
            log.info("likelihood phase sync: iteration %d/%d, NLL per photon %.6f (%+.2e), "
                     "%.0fs", iteration, max_iterations, trace[-1][1], trace[-1][1] - start,
                     time.perf_counter() - began)
        if iteration >= window:
            recent = trace[-1 - window][1] - trace[-1][1]
            if recent < relative_tolerance * (start - trace[-1][1]):
                raise StopIteration  # scipy ends the search here and keeps the result

    with one_blas_thread():
        solution = minimize(objective, theta0 * unit, jac=True, method="L-BFGS-B",
                            callback=progress,
                            options={"maxiter": max_iterations, "ftol": 0.0, "gtol": 0.0,
                                     "maxcor": 20})
    converged = len(trace) - 1 < max_iterations
    theta = solution.x / unit if solution.fun <= start else theta0
    final_value, final_gradient = fields.value_and_gradient(theta)
    return theta, {"nll_gain_per_photon": max(start - final_value, 0.0),
                   "iterations": len(trace) - 1, "converged": float(converged),
                   "gradient_norm": float(np.linalg.norm(final_gradient)),
                   "evaluations": fields.evaluations, "trace": trace}


def _check_sync_inputs(patches: np.ndarray, positions: np.ndarray, probe: np.ndarray,
                       counts: np.ndarray, initial: np.ndarray | None,
                       patterns: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """:func:`likelihood_offsets`' arrays, checked: ``(patches, positions, counts, θ₀,
    patterns)``."""
    patches = np.asarray(patches)
    positions = check_centres(positions)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"patches must have shape (K, N, N), got {patches.shape}")
    K, N = patches.shape[0], patches.shape[1]
    counts = np.asarray(counts)
    if positions.shape[0] != K or counts.shape != (K, N, N) or np.shape(probe) != (N, N):
        raise ValueError(f"likelihood_offsets needs positions ({K}, 2), counts ({K}, {N}, {N}) "
                         f"and a ({N}, {N}) probe, got {positions.shape}, {counts.shape} and "
                         f"{np.shape(probe)}")
    if not np.all(np.isfinite(counts)) or counts.min() < 0:
        raise ValueError("counts must be finite and >= 0")
    theta0 = np.zeros(K) if initial is None else np.asarray(initial, np.float64)
    if theta0.shape != (K,):
        raise ValueError(f"initial must have shape ({K},), got {theta0.shape}")
    patterns = np.arange(K) if patterns is None else np.asarray(patterns)
    if patterns.shape != (K,):
        raise ValueError(f"patterns must have shape ({K},), got {patterns.shape}")
    return patches, positions, counts, theta0, patterns
