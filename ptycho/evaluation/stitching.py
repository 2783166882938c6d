"""Stitch predicted patches back onto the object grid (docs/physics.md §8.1).

Normalised overlap-add of each patch's central ``keep × keep`` part at its scan position, using
the adjoint placement of :func:`ptycho.physics.place_patches` (the same geometry as simulation).
Patches are processed in chunks, so memory does not grow with the number of patterns.

A diffraction pattern fixes its patch only up to a constant phase (``|F(P·O·e^{iθ})|² =
|F(P·O)|²``), so patches that are reconstructed one group at a time carry offsets of their own.
:func:`phase_offsets` estimates them from the overlaps alone (angular synchronisation), so the
stitch does not average patches that disagree by an unobservable constant.

``keep`` is ``keep_fraction · N`` (:func:`central_size`) unless the scan is too sparse for that:
:func:`stitch_size` widens it to cover every pixel between the patch centres, and
:func:`check_stitch_geometry` refuses a scan whose gaps not even a whole patch covers.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import tensorflow as tf
from scipy.optimize import OptimizeResult, minimize
from scipy.signal import correlate2d
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import LinearOperator, eigsh
from scipy.spatial import Delaunay, QhullError, cKDTree

from ptycho import physics
from ptycho.checks import check_patch_size, check_positive_int

log = logging.getLogger(__name__)

__all__ = [
    "central_size",
    "check_stitch_geometry",
    "largest_gap",
    "likelihood_offsets",
    "phase_offsets",
    "stitch",
    "stitch_size",
]


def central_size(N: int, keep_fraction: float) -> int:
    """Even side of the central part kept from each ``N × N`` patch (at least 2 pixels)."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction!r}")
    return max(2, 2 * round(keep_fraction * N / 2))


def _check_centres(positions: np.ndarray) -> np.ndarray:
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 2 or positions.shape[0] < 1:
        raise ValueError(f"positions must have shape (K, 2) with K >= 1, got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions must be finite, got NaN or Inf")
    return positions


def largest_gap(positions: np.ndarray) -> float:
    """Largest Chebyshev distance (pixels) from a pixel between the patch centres to the nearest
    centre: ``max_p min_j max(|x_p − x_j|, |y_p − y_j|)`` over the whole pixels ``p`` inside the
    convex hull of the centres (their bounding box when the centres are collinear).

    Args:
        positions: ``(K, 2)`` float ``(x, y)`` patch centres, pixels of the object grid (the
            convention of :mod:`ptycho.data`; repeats are allowed).

    Returns:
        The distance in pixels (0 for a single centre).
    """
    centres = np.unique(_check_centres(positions), axis=0)
    low, high = np.floor(centres.min(axis=0)), np.ceil(centres.max(axis=0))
    xs, ys = np.arange(low[0], high[0] + 1), np.arange(low[1], high[1] + 1)
    pixels = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    try:
        inside = Delaunay(centres).find_simplex(pixels) >= 0
    except (QhullError, ValueError):  # fewer than 3 centres, or all on one line
        inside = np.all((pixels >= centres.min(axis=0)) & (pixels <= centres.max(axis=0)), axis=1)
    if not np.any(inside):
        return 0.0
    distance, _ = cKDTree(centres).query(pixels[inside], k=1, p=np.inf)
    return float(distance.max())


def stitch_size(positions: np.ndarray, *, N: int, keep_fraction: float) -> int:
    """Even side of the central part each patch contributes to the stitch.

    ``max(central_size(N, keep_fraction), 2·⌈g⌉ + 2)`` with ``g`` the :func:`largest_gap`: a
    central part of side ``k`` placed at ``x`` fully covers the pixels with
    ``|c − x| ≤ k/2 − 1``, so every pixel between the centres is covered. A dense scan keeps the
    fixed fraction; a sparse one widens the part. The result may exceed ``N``
    (:func:`check_stitch_geometry` refuses that).

    Args:
        positions: ``(K, 2)`` float ``(x, y)`` patch centres, pixels of the object grid.
        N: patch side, a power of two ≥ 16.
        keep_fraction: wanted central part as a fraction of ``N``, in ``(0, 1]``.

    Returns:
        The side in pixels (even, ≥ 2).
    """
    N = check_patch_size(N)
    fixed = central_size(N, keep_fraction)
    # The tolerance keeps float32 round-off of whole-pixel gaps from adding 2 pixels.
    needed = 2 * math.ceil(largest_gap(positions) - 1e-6) + 2
    return max(fixed, needed)


def check_stitch_geometry(positions: np.ndarray, *, N: int, keep_fraction: float) -> int:
    """:func:`stitch_size`, refused when the scan leaves holes that not even a whole patch covers.

    Needs only the scan positions, so it can run before any training ("preflight").

    Args:
        positions: ``(K, 2)`` float ``(x, y)`` patch centres, pixels of the object grid.
        N: patch side, a power of two ≥ 16.
        keep_fraction: wanted central part as a fraction of ``N``, in ``(0, 1]``.

    Returns:
        The central part's side in pixels (even, ≤ ``N``).

    Raises:
        ValueError: the needed central part exceeds ``N``, saying which settings fix it.
    """
    N = check_patch_size(N)
    keep = stitch_size(positions, N=N, keep_fraction=keep_fraction)
    if keep > N:
        gap = 2 * largest_gap(positions)
        raise ValueError(
            f"the scan leaves {gap:.1f} px between neighbouring patch centres: stitching needs "
            f"a central part of {keep} px, more than a patch (N={N}); simulate more test "
            f"patterns (data.n_train) or a smaller object (data.object.size)"
        )
    return keep


def _check_weight(weight: np.ndarray, N: int) -> np.ndarray:
    """``weight`` as ``(N, N)`` float64, refused unless finite, ≥ 0 and not all zero."""
    weight = np.asarray(weight, np.float64)
    if weight.shape != (N, N):
        raise ValueError(f"weight must have shape ({N}, {N}), got {weight.shape}")
    if not np.all(np.isfinite(weight)) or weight.min() < 0 or weight.max() <= 0:
        raise ValueError("weight must be finite, >= 0 and not all zero")
    return weight


def _stitch_values(N: int, keep: int, weight: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(central, values)``, both ``(N, N)`` float32: the central ``keep × keep`` indicator and
    the per-pixel weight :func:`stitch` gives a patch (see there)."""
    start = (N - keep) // 2
    central = np.zeros((N, N), np.float32)
    central[start : start + keep, start : start + keep] = 1.0
    if weight is None:
        return central, central
    weight = _check_weight(weight, N)
    return central, (weight / weight.max() + 1e-6 * central).astype(np.float32)


def stitch(
    patches: np.ndarray,
    positions: np.ndarray,
    object_shape: tuple[int, int],
    *,
    keep: int,
    weight: np.ndarray | None = None,
    chunk_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised overlap-add of the patches.

    With ``weight=None`` each patch contributes its central ``keep × keep`` part, evenly. With a
    ``weight`` (e.g. the probe intensity ``|P|²``), each patch pixel counts in proportion to it,
    over the whole patch: ``object = Σ placed w·P / Σ placed w`` (the average PIE-type engines
    form, where a pixel's information grows with the light it got), plus ``10⁻⁶`` times the
    central part so that every covered pixel has a defined value however faint the light.
    Either way the returned coverage is that of the central parts, so the scored region does
    not depend on the weighting.

    Args:
        patches: ``(K, N, N)`` complex64 object patches (dimensionless transmission).
        positions: ``(K, 2)`` ``(x, y)`` patch centres, pixels of the object grid.
        object_shape: ``(H, W)`` of the object grid.
        keep: side of the central part (even, ≤ N): the coverage, and the uniform weighting.
        weight: ``(N, N)`` float ≥ 0 per-pixel weight, or ``None`` for the uniform central part.
        chunk_size: patches placed per step.

    Returns:
        ``(object (H, W) complex64, coverage (H, W) float32)``: coverage counts the central parts
        over each pixel; pixels it leaves at 0 are 0 in the object.
    """
    patches = np.asarray(patches)
    positions = np.asarray(positions, np.float32)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"patches must have shape (K, N, N), got {patches.shape}")
    if positions.shape != (patches.shape[0], 2):
        raise ValueError(
            f"positions must have shape ({patches.shape[0]}, 2) to match the patches, "
            f"got {positions.shape}"
        )
    N = patches.shape[1]
    keep = check_positive_int(keep, "keep")
    if keep > N or keep % 2:
        raise ValueError(f"keep must be even and <= N={N}, got {keep!r}")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    central, values = _stitch_values(N, keep, weight)
    shape = (int(object_shape[0]), int(object_shape[1]))
    numerator = np.zeros(shape, np.complex64)
    denominator = np.zeros(shape, np.float32)
    coverage = np.zeros(shape, np.float32)
    for first in range(0, len(patches), chunk_size):
        chunk = patches[first : first + chunk_size].astype(np.complex64)
        where = tf.constant(positions[first : first + chunk_size][None])
        count = (1, len(chunk), N, N)
        numerator += physics.place_patches(
            tf.constant((chunk * values)[None]), where, shape)[0].numpy()
        denominator += physics.place_patches(
            tf.broadcast_to(tf.constant(values), count), where, shape)[0].numpy()
        if weight is None:
            coverage = denominator
        else:
            coverage += physics.place_patches(
                tf.broadcast_to(tf.constant(central), count), where, shape)[0].numpy()
    covered = (coverage > 1e-3) & (denominator > 0)
    stitched = np.zeros(shape, np.complex64)
    stitched[covered] = numerator[covered] / denominator[covered]
    return stitched, coverage


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
    positions = _check_centres(positions)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"patches must have shape (K, N, N), got {patches.shape}")
    K, N = patches.shape[0], patches.shape[1]
    if positions.shape[0] != K:
        raise ValueError(f"positions must have shape ({K}, 2) to match the patches, "
                         f"got {positions.shape}")
    weight = _check_weight(weight, N)
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

    :func:`phase_offsets` makes overlapping patches agree where they overlap: at the edges of
    the illuminated discs, where a network's patch is least constrained by its own pattern (a
    g=1 network shrinks the contrast there; the agreement then carries that shrinkage into the
    offsets and the stitched phase comes out too flat). This asks the data instead: it finds
    the ``θ`` under which the stitched object ``O_θ`` (:func:`stitch`'s normalised overlap-add
    of ``e^{iθ_k} P_k``, over every pixel a patch weighs), cut again at every scan position and
    sent through the forward model, best explains every measured pattern,

        ``min_θ Σ_k Σ_q [s² I_kq(θ) − n_kq log(s² I_kq(θ))]``,
        ``I_k(θ) = |F(probe · cut_k(O_θ))|²``,

    with the photon scale ``s²`` profiled out (``s² = Σ n / Σ I``), so a network's amplitude
    scale does not matter. Each pattern's footprint is stitched mostly from its neighbours'
    well-lit centres, so the counts weigh the offsets where the patches are reliable. Only the
    ``K`` constants are fitted — the patches themselves are left as the network made them —
    against ``K·N²`` counts. L-BFGS (scipy) on TensorFlow's gradient, from ``initial``.
    Hand-written because no library stitches under a Poisson likelihood.

    Args:
        patches: ``(K, N, N)`` complex object patches (dimensionless transmission).
        positions: ``(K, 2)`` float ``(x, y)`` patch centres, pixels of the object grid.
        probe: ``(N, N)`` complex probe the patterns were measured with.
        counts: ``(K, N, N)`` photons measured at each patch's position (DC at the centre).
        object_shape: ``(H, W)`` of the object grid.
        keep, weight: the stitch's (:func:`stitch`).
        initial: ``(K,)`` starting offsets (radians), e.g. :func:`phase_offsets`'; zeros if
            ``None``.
        patterns: ``(K,)`` int index of the measured pattern behind each patch: patches with
            one index (a pattern in several groups, g > 1) share it, and it counts once;
            ``None``: every patch is a pattern of its own.
        max_iterations: L-BFGS iterations at most.
        chunk_size: patches placed or cut per operation (memory bound).

    Returns:
        ``(offsets (K,) float64 radians with circular mean 0, info)``; ``info`` holds
        ``nll_gain_per_photon`` (the Poisson NLL per photon at ``initial`` minus at the result,
        ≥ 0 nats) and ``iterations``.

    Raises:
        ValueError: mismatched shapes, negative counts.
    """
    patches = np.asarray(patches)
    positions = _check_centres(positions)
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
    max_iterations = check_positive_int(max_iterations, "max_iterations")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    theta0 = np.zeros(K) if initial is None else np.asarray(initial, np.float64)
    if theta0.shape != (K,):
        raise ValueError(f"initial must have shape ({K},), got {theta0.shape}")
    patterns = np.arange(K) if patterns is None else np.asarray(patterns)
    if patterns.shape != (K,):
        raise ValueError(f"patterns must have shape ({K},), got {patterns.shape}")

    values = _stitch_values(N, keep, weight)[1]
    if weight is None:
        # The uniform stitch defines only the central parts; the forward model also needs the
        # rest of each lit disc: filled, at 1e-6 of the weight, by the probe-weighted average.
        light = np.abs(np.asarray(probe)) ** 2
        values = (values + 1e-6 * light / light.max()).astype(np.float32)
    shape = (int(object_shape[0]), int(object_shape[1]))
    chunks = [slice(first, first + chunk_size) for first in range(0, K, chunk_size)]
    where = [tf.constant(positions[part][None].astype(np.float32)) for part in chunks]
    weighted = [tf.constant((patches[part] * values).astype(np.complex64)[None])
                for part in chunks]
    # Each measured pattern counts once, however many groups (g > 1) reconstructed it.
    first_seen = np.sort(np.unique(patterns, return_index=True)[1])
    patterns = [first_seen[start : start + chunk_size]
                for start in range(0, len(first_seen), chunk_size)]
    cut_at = [tf.constant(positions[part][None].astype(np.float32)) for part in patterns]
    measured = [tf.constant(counts[part].astype(np.float64)) for part in patterns]
    denominator = np.zeros(shape, np.float32)
    for part, at in zip(chunks, where, strict=True):
        count = (1, len(patches[part]), N, N)
        denominator += physics.place_patches(tf.broadcast_to(tf.constant(values), count), at,
                                             shape)[0].numpy()
    # Every pixel some patch weighs, not only stitch()'s covered centres: a pattern at the edge
    # of the scan also lit pixels only its own patch reaches.
    covered = denominator > 0
    inverse = tf.constant(np.where(covered, 1.0 / np.where(covered, denominator, 1.0), 0.0)
                          .astype(np.complex64))
    probe_tensor = tf.constant(np.asarray(probe, np.complex64))
    total = float(counts[first_seen].sum())
    if total <= 0:
        raise ValueError("counts hold no photons: no likelihood to choose offsets by")

    @tf.function(reduce_retracing=True)
    def value_and_gradient(theta: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(theta)
            rotation = tf.complex(tf.cos(theta), tf.sin(theta))
            canvas = tf.zeros(shape, tf.complex64)
            for part, at, patch in zip(chunks, where, weighted, strict=True):
                canvas += physics.place_patches(
                    patch * rotation[part][None, :, None, None], at, shape)[0]
            obj = (canvas * inverse)[None]
            light = tf.constant(0.0, tf.float64)
            log_light = tf.constant(0.0, tf.float64)
            for at, photons in zip(cut_at, measured, strict=True):
                cut = physics.extract_patches(obj, at, N)[0]
                pattern = tf.cast(physics.intensity(physics.far_field(
                    physics.illuminate(probe_tensor, cut))), tf.float64)
                light += tf.reduce_sum(pattern)
                log_light += tf.reduce_sum(photons * tf.math.log(pattern + 1e-30))
            # Σ s²I − Σ n log(s²I) at the best s² = Σn/ΣI: Σn − Σn log(Σn/ΣI) − Σ n log I
            nll = (total - total * tf.math.log(total / light) - log_light) / total
        return nll, tape.gradient(nll, theta)

    values_seen: list[float] = []  # the first is the NLL at theta0, L-BFGS's first evaluation

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = value_and_gradient(tf.constant(theta, tf.float32))
        values_seen.append(float(value))
        return float(value), gradient.numpy().astype(np.float64)

    began, count = time.perf_counter(), [0]

    def progress(intermediate_result: OptimizeResult) -> None:  # long on a CPU at N=64
        count[0] += 1
        if count[0] % 25 == 0:
            value = float(intermediate_result.fun)
            log.info("likelihood phase sync: iteration %d/%d, NLL per photon %.6f (%+.2e), "
                     "%.0fs", count[0], max_iterations, value, value - values_seen[0],
                     time.perf_counter() - began)

    solution = minimize(objective, theta0, jac=True, method="L-BFGS-B", callback=progress,
                        options={"maxiter": max_iterations, "ftol": 1e-12, "gtol": 1e-9})
    start = values_seen[0]
    theta = solution.x if solution.fun <= start else theta0
    theta = np.angle(np.exp(1j * (theta - np.angle(np.exp(1j * theta).sum()))))
    log.info("likelihood phase sync: %d patches, %d iterations, NLL per photon %.6f -> %.6f "
             "in %.1fs", K, solution.nit, start, min(start, float(solution.fun)),
             time.perf_counter() - began)
    return theta, {"nll_gain_per_photon": max(start - float(solution.fun), 0.0),
                   "iterations": float(solution.nit)}
