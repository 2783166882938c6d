"""Scan positions: where the probe sits on the object, ``(x, y)`` float64 pixels of the object grid.

A position is valid when the whole ``N × N`` patch centred on it (bilinear support included) lies
inside the object: ``N/2 + margin ≤ x ≤ W − N/2 − 1 − margin`` and likewise for ``y``.
"""

from __future__ import annotations

import math

import numpy as np

from ptycho.checks import check_patch_size, check_positive_int
from ptycho.config import ScanConfig

__all__ = ["check_positions", "make_positions", "random_positions", "raster_positions",
           "valid_range"]

def valid_range(object_shape: tuple[int, int], N: int, margin: float = 0.0) -> np.ndarray:
    """``[[x_min, x_max], [y_min, y_max]]`` (float64) of valid patch centres.

    Raises ``ValueError`` when the object is smaller than a patch.
    """
    N = check_patch_size(N)
    height, width = int(object_shape[0]), int(object_shape[1])
    low = N / 2 + margin
    x_max, y_max = width - N / 2 - 1 - margin, height - N / 2 - 1 - margin
    if x_max < low or y_max < low:
        raise ValueError(
            f"object of shape {height}x{width} is smaller than a patch: N={N} with margin {margin} "
            f"needs at least {math.ceil(N + 1 + 2 * margin)} pixels per side"
        )
    return np.array([[low, x_max], [low, y_max]], dtype=np.float64)


def random_positions(n: int, object_shape: tuple[int, int], N: int, *, seed: int,
                     margin: float = 0.0) -> np.ndarray:
    """``(n, 2)`` float64 ``(x, y)`` drawn uniformly over the valid region, seeded."""
    n = check_positive_int(n, "number of positions")
    bounds = valid_range(object_shape, N, margin)
    return np.random.default_rng(seed).uniform(bounds[:, 0], bounds[:, 1], size=(n, 2))


def raster_positions(n: int, object_shape: tuple[int, int], N: int, *, seed: int,
                     jitter: float, margin: float = 0.0) -> np.ndarray:
    """``(n, 2)`` float64: ``n`` points of a raster spanning the valid region (``⌈√n⌉`` columns,
    rows filled in order, so only the last row may be partial), each moved by a seeded uniform
    jitter of ± ``jitter`` pixels and clipped to the region."""
    n = check_positive_int(n, "number of positions")
    bounds = valid_range(object_shape, N, margin)
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    xs = np.linspace(bounds[0, 0], bounds[0, 1], columns)
    ys = np.linspace(bounds[1, 0], bounds[1, 1], rows)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)[:n]
    grid = grid + np.random.default_rng(seed).uniform(-jitter, jitter, size=grid.shape)
    return np.clip(grid, bounds[:, 0], bounds[:, 1])


def make_positions(spec: ScanConfig, n: int, object_shape: tuple[int, int], N: int, *,
                   seed: int) -> np.ndarray:
    """Positions of ``spec``: ``(n, 2)`` float64 ``(x, y)`` pixels."""
    if spec.kind == "raster":
        positions = raster_positions(n, object_shape, N, seed=seed, margin=spec.margin,
                                     jitter=spec.jitter)
    else:
        positions = random_positions(n, object_shape, N, seed=seed, margin=spec.margin)
    if not spec.subpixel:
        bounds = valid_range(object_shape, N, spec.margin)
        positions = np.clip(np.round(positions), np.ceil(bounds[:, 0]), np.floor(bounds[:, 1]))
    return positions


def check_positions(positions: np.ndarray, object_shape: tuple[int, int], N: int) -> np.ndarray:
    """Validate ``positions (M, 2)`` finite and inside the valid region; return them as float64."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 2 or positions.shape[0] < 1:
        raise ValueError(f"positions must have shape (M, 2) with M >= 1, got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions must be finite, got NaN or Inf")
    bounds = valid_range(object_shape, N)
    tolerance = 1e-6
    outside = np.any(
        (positions < bounds[:, 0] - tolerance) | (positions > bounds[:, 1] + tolerance), axis=1
    )
    if np.any(outside):
        first = int(np.argmax(outside))
        raise ValueError(
            f"positions: {int(outside.sum())} patch centres fall outside the object's valid range "
            f"x in [{bounds[0, 0]}, {bounds[0, 1]}], y in [{bounds[1, 0]}, {bounds[1, 1]}] "
            f"(first: index {first}, (x, y) = {tuple(positions[first])})"
        )
    return positions
