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
            the overlap offsets) and ``phase_sync_iterations``.
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
    offsets = phase_offsets(patches, positions, intensity)
    alternatives, metrics = {}, {}
    if mode == PhaseSync.likelihood:
        alternatives["overlap_sync"] = stitched(offsets)
        offsets, info = likelihood_offsets(patches, positions, probe, counts, object_shape,
                                           keep=keep, weight=weight, initial=offsets,
                                           patterns=patterns)
        metrics["phase_sync_nll_gain_per_photon"] = info["nll_gain_per_photon"]
        metrics["phase_sync_iterations"] = info["iterations"]
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
    weighted = np.empty((K, N, N), np.complex128)
    moved_weight = np.empty((K, N, N), np.float64)
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
    on the whole-pixel canvas."""
    K = len(weighted)
    flat = weighted.reshape(K, -1)
    conj = np.conj(flat)
    per_patch = flat.shape[1]
    inverse = 1.0 / np.maximum(np.bincount(index, weight.ravel(), size), 1e-12)

    def matvec(v: np.ndarray) -> np.ndarray:
        placed = (flat * np.asarray(v).reshape(K, 1)).ravel()
        canvas = (np.bincount(index, placed.real, size)
                  + 1j * np.bincount(index, placed.imag, size)) * inverse
        return (conj * canvas[index].reshape(K, per_patch)).sum(axis=1)

    if K <= _DENSE_SYNC or K < 3:  # (ARPACK needs at least 3)
        matrix = np.stack([matvec(column) for column in np.eye(K, dtype=np.complex128)], axis=1)
        vector = np.linalg.eigh((matrix + matrix.conj().T) / 2)[1][:, -1]
    else:
        operator = LinearOperator((K, K), matvec=matvec, dtype=np.complex128)
        vector = eigsh(operator, k=1, which="LA", v0=np.ones(K, np.complex128), tol=1e-8)[1][:, 0]
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
    max_iterations: int = 200,
    chunk_size: int = 512,
) -> tuple[np.ndarray, dict[str, float]]:
    """Constant phases of the patches chosen by the measured counts (maximum likelihood).

    :func:`phase_offsets` makes patches agree where they overlap: at the edges of the lit discs,
    where a network's patch is least constrained (a g=1 network shrinks the contrast there, and
    the stitched phase comes out too flat). This asks the data instead: the ``θ`` under which
    the stitched object ``O_θ`` (the normalised overlap-add of ``e^{iθ_k} P_k`` over every pixel
    a patch weighs), cut again at every scan position, best explains every measured pattern,

        ``min_θ Σ_k Σ_q [s² I_kq(θ) − n_kq log(s² I_kq(θ))]``,  ``I_k(θ) = |A O_θ|²_k``,

    the photon scale ``s²`` profiled out, so a network's amplitude scale does not matter. Each
    pattern's footprint is stitched mostly from its neighbours' well-lit centres, so the counts
    weigh the offsets where the patches are reliable. Only the ``K`` constants are fitted (the
    patches are left as the network made them) against ``K·N²`` counts: L-BFGS (scipy) on
    TensorFlow's gradient, from ``initial``. Hand-written: no library stitches under a Poisson
    likelihood.

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
        max_iterations: L-BFGS iterations at most.
        chunk_size: patches placed or cut per operation (memory bound).

    Returns:
        ``(offsets (K,) float64 radians with circular mean 0, info)``; ``info`` holds
        ``nll_gain_per_photon`` (the Poisson NLL per photon at ``initial`` minus at the result,
        ≥ 0 nats) and ``iterations``.

    Raises: ValueError: mismatched shapes, negative counts.
    """
    patches, positions, counts, theta0, patterns = _check_sync_inputs(
        patches, positions, probe, counts, initial, patterns)
    max_iterations = check_positive_int(max_iterations, "max_iterations")
    value_and_gradient = _profiled_nll(patches, positions, probe, counts, object_shape, keep=keep,
                                       weight=weight, patterns=patterns,
                                       chunk_size=check_positive_int(chunk_size, "chunk_size"))
    began = time.perf_counter()
    solution, start = _minimise(value_and_gradient, theta0, max_iterations)
    theta = solution.x if solution.fun <= start else theta0
    theta = np.angle(np.exp(1j * (theta - np.angle(np.exp(1j * theta).sum()))))
    log.info("likelihood phase sync: %d patches, %d iterations, NLL per photon %.6f -> %.6f "
             "in %.1fs", len(patches), solution.nit, start, min(start, float(solution.fun)),
             time.perf_counter() - began)
    return theta, {"nll_gain_per_photon": max(start - float(solution.fun), 0.0),
                   "iterations": float(solution.nit)}


def _minimise(value_and_gradient, theta0: np.ndarray,
              max_iterations: int) -> tuple[OptimizeResult, float]:
    """L-BFGS from ``theta0``, a progress line every 25 iterations (long on a CPU at N=64);
    returns scipy's result and the objective at ``theta0``."""
    values_seen: list[float] = []  # the first is the NLL at theta0, L-BFGS's first evaluation
    began, count = time.perf_counter(), [0]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = value_and_gradient(tf.constant(theta, tf.float32))
        values_seen.append(float(value))
        return float(value), gradient.numpy().astype(np.float64)

    def progress(intermediate_result: OptimizeResult) -> None:
        count[0] += 1
        if count[0] % 25 == 0:
            value = float(intermediate_result.fun)
            log.info("likelihood phase sync: iteration %d/%d, NLL per photon %.6f (%+.2e), "
                     "%.0fs", count[0], max_iterations, value, value - values_seen[0],
                     time.perf_counter() - began)

    solution = minimize(objective, theta0, jac=True, method="L-BFGS-B", callback=progress,
                        options={"maxiter": max_iterations, "ftol": 1e-12, "gtol": 1e-9})
    return solution, values_seen[0]


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


def _profiled_nll(patches: np.ndarray, positions: np.ndarray, probe: np.ndarray,
                  counts: np.ndarray, object_shape: tuple[int, int], *, keep: int,
                  weight: np.ndarray | None, patterns: np.ndarray, chunk_size: int):
    """``θ ↦ (NLL per photon, its gradient)`` of :func:`likelihood_offsets` as a
    ``tf.function``: stitch ``e^{iθ_k} P_k``, cut every measured pattern's footprint, profiled
    Poisson NLL (:func:`ptycho.physics.profiled_poisson_nll_per_photon`)."""
    N = patches.shape[1]
    values = stitch_values(N, keep, weight)[1]
    if weight is None:
        # The uniform stitch defines only the central parts; the forward model also needs the
        # rest of each lit disc: filled, at 1e-6 of the weight, by the probe-weighted average.
        light = np.abs(np.asarray(probe)) ** 2
        values = (values + 1e-6 * light / light.max()).astype(np.float32)
    placing = physics.Ptychography(probe, positions, object_shape, chunk_size=chunk_size)
    weighted = tf.constant((patches * values).astype(np.complex64))
    # Every pixel some patch weighs, not only stitch()'s covered centres: a pattern at the edge
    # of the scan also lit pixels only its own patch reaches.
    denominator = placing.place(tf.constant(values)).numpy()
    covered = denominator > 0
    inverse = tf.constant(np.where(covered, 1.0 / np.where(covered, denominator, 1.0), 0.0)
                          .astype(np.complex64))
    # Each measured pattern counts once, however many groups (g > 1) reconstructed it.
    first_seen = np.sort(np.unique(patterns, return_index=True)[1])
    measuring = physics.Ptychography(probe, positions[first_seen], object_shape,
                                     chunk_size=chunk_size)
    measured = tf.constant(counts[first_seen].astype(np.float64))
    if float(counts[first_seen].sum()) <= 0:
        raise ValueError("counts hold no photons: no likelihood to choose offsets by")

    @tf.function(reduce_retracing=True)
    def value_and_gradient(theta: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(theta)
            rotation = tf.complex(tf.cos(theta), tf.sin(theta))
            obj = placing.place(weighted * rotation[:, None, None]) * inverse
            nll = physics.profiled_poisson_nll_per_photon(measured, measuring.intensities(obj))
        return nll, tape.gradient(nll, theta)

    return value_and_gradient
