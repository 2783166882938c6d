"""Stitch predicted patches back onto the object grid (PHYSICS.md §7, step 1).

Normalised overlap-add of each patch's central ``keep × keep`` part at its scan position, using
the adjoint placement of :func:`ptycho.physics.place_patches` (the same geometry as simulation).
Patches are processed in chunks, so memory does not grow with the number of patterns.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ptycho import physics
from ptycho.checks import check_positive_int

__all__ = ["central_size", "stitch"]


def central_size(N: int, keep_fraction: float) -> int:
    """Even side of the central part kept from each ``N × N`` patch (at least 2 pixels)."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction!r}")
    return max(2, 2 * round(keep_fraction * N / 2))


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
