"""Stitch patches back onto the object grid (docs/physics.md §8.1).

Normalised overlap-add of each patch's central ``keep × keep`` part at its scan position (or of
the whole patch weighted by the probe intensity), using the adjoint placement of
:func:`ptycho.physics.place_patches` (the same geometry as simulation). Patches are processed in
chunks, so memory does not grow with the number of patterns.

``keep`` is ``keep_fraction · N`` (:func:`central_size`) unless the scan is too sparse for that:
:func:`stitch_size` widens it to cover every pixel between the patch centres, and
:func:`check_stitch_geometry` refuses a scan whose gaps not even a whole patch covers.
:func:`scan_weight` is the coverage of a scan alone: the region every arm is scored on.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from scipy.spatial import Delaunay, QhullError, cKDTree

from ptycho import physics
from ptycho.checks import check_patch_size, check_positive_int

__all__ = ["central_size", "check_stitch_geometry", "largest_gap", "scan_weight", "stitch",
           "stitch_size"]


def central_size(N: int, keep_fraction: float) -> int:
    """Even side of the central part kept from each ``N × N`` patch (at least 2 pixels)."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction!r}")
    return max(2, 2 * round(keep_fraction * N / 2))


def check_centres(positions: np.ndarray) -> np.ndarray:
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
    centres = np.unique(check_centres(positions), axis=0)
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


def check_weight(weight: np.ndarray, N: int) -> np.ndarray:
    """``weight`` as ``(N, N)`` float64, refused unless finite, ≥ 0 and not all zero."""
    weight = np.asarray(weight, np.float64)
    if weight.shape != (N, N):
        raise ValueError(f"weight must have shape ({N}, {N}), got {weight.shape}")
    if not np.all(np.isfinite(weight)) or weight.min() < 0 or weight.max() <= 0:
        raise ValueError("weight must be finite, >= 0 and not all zero")
    return weight


def stitch_values(N: int, keep: int, weight: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(central, values)``, both ``(N, N)`` float32: the central ``keep × keep`` indicator and
    the per-pixel weight :func:`stitch` gives a patch (see there)."""
    start = (N - keep) // 2
    central = np.zeros((N, N), np.float32)
    central[start : start + keep, start : start + keep] = 1.0
    if weight is None:
        return central, central
    weight = check_weight(weight, N)
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
    central, values = stitch_values(N, keep, weight)
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


def scan_weight(positions: np.ndarray, N: int, object_shape: tuple[int, int], *,
                keep_fraction: float) -> np.ndarray:
    """``(H, W)`` float32 coverage of a scan: how many patches' central parts cover each pixel,
    exactly as :func:`stitch` counts them (whatever the patches), so every arm is scored on the
    same region.

    Args:
        positions: ``(K, 2)`` float ``(x, y)`` patch centres, pixels of the object grid.
        N: patch side, a power of two ≥ 16.
        object_shape: ``(H, W)`` of the object grid.
        keep_fraction: as in :func:`check_stitch_geometry`.
    """
    positions = np.asarray(positions)
    keep = check_stitch_geometry(positions, N=N, keep_fraction=keep_fraction)
    ones = np.ones((len(positions), N, N), np.complex64)
    return stitch(ones, positions, object_shape, keep=keep)[1]
