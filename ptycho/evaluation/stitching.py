"""Stitch predicted patches back onto the object grid (docs/physics.md §8.1).

Normalised overlap-add of each patch's central ``keep × keep`` part at its scan position, using
the adjoint placement of :func:`ptycho.physics.place_patches` (the same geometry as simulation).
Patches are processed in chunks, so memory does not grow with the number of patterns.

``keep`` is ``keep_fraction · N`` (:func:`central_size`) unless the scan is too sparse for that:
:func:`stitch_size` widens it to cover every pixel between the patch centres, and
:func:`check_stitch_geometry` refuses a scan whose gaps not even a whole patch covers.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from scipy.spatial import Delaunay, QhullError, cKDTree

from ptycho import physics
from ptycho.checks import check_patch_size, check_positive_int

__all__ = ["central_size", "check_stitch_geometry", "largest_gap", "stitch", "stitch_size"]


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


def stitch(
    patches: np.ndarray,
    positions: np.ndarray,
    object_shape: tuple[int, int],
    *,
    keep: int,
    chunk_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised overlap-add of the patches' central parts.

    Args:
        patches: ``(K, N, N)`` complex64 object patches (dimensionless transmission).
        positions: ``(K, 2)`` ``(x, y)`` patch centres, pixels of the object grid.
        object_shape: ``(H, W)`` of the object grid.
        keep: side of the central part used (even, ≤ N).
        chunk_size: patches placed per step.

    Returns:
        ``(object (H, W) complex64, weight (H, W) float32)``; pixels no patch covers are 0.
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
    start = (N - keep) // 2
    central = patches[:, start : start + keep, start : start + keep].astype(np.complex64)
    shape = (int(object_shape[0]), int(object_shape[1]))
    numerator = np.zeros(shape, np.complex64)
    weight = np.zeros(shape, np.float32)
    ones = tf.ones((1, 1, keep, keep), tf.float32)
    for first in range(0, len(central), chunk_size):
        chunk = tf.constant(central[first : first + chunk_size][None])
        where = tf.constant(positions[first : first + chunk_size][None])
        numerator += physics.place_patches(chunk, where, shape)[0].numpy()
        mask = tf.broadcast_to(ones, chunk.shape)
        weight += physics.place_patches(mask, where, shape)[0].numpy()
    covered = weight > 1e-3
    stitched = np.zeros(shape, np.complex64)
    stitched[covered] = numerator[covered] / weight[covered]
    return stitched, weight
