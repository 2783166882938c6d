"""Scan positions: where the probe sits on the object, ``(x, y)`` float64 pixels of the object grid.

A position is valid when the whole ``N × N`` patch centred on it (bilinear support included) lies
inside the object: ``N/2 + margin ≤ x ≤ W − N/2 − 1 − margin`` and likewise for ``y``.
"""

from __future__ import annotations

import math

import numpy as np

from ptycho.checks import check_patch_size, check_positive_int
from ptycho.config import PositionErrorConfig, ScanConfig

__all__ = [
    "check_positions", "make_positions", "perturb_positions", "position_error", "random_positions",
    "raster_positions", "valid_range"
]

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


def perturb_positions(nominal: np.ndarray, error: PositionErrorConfig,
                      object_shape: tuple[int, int], N: int, *, seed: int) -> np.ndarray:
    """The true positions of a scan commanded to ``nominal``: ``(M, 2)`` float64 ``(x, y)``.

    ``centre + R(rotation)·(1 + scale)·(nominal − centre) + drift·t + σ·ξ``, ``centre`` the
    nominal scan's mean, ``t = j/(M−1)`` along the scan order, ``ξ`` seeded standard normal per
    axis; then clipped to the valid region (a stage cannot put the probe off the object here).
    The nominal positions come back unchanged when ``error`` is all zero.
    """
    nominal = np.asarray(nominal, np.float64)
    if error.exact:
        return nominal
    centre = nominal.mean(axis=0)
    angle = np.deg2rad(error.rotation)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    true = centre + (1.0 + error.scale) * (nominal - centre) @ rotation.T
    progress = np.linspace(0.0, 1.0, len(nominal))[:, None]
    true = true + progress * np.array([error.drift_x, error.drift_y])
    if error.sigma > 0:
        true = true + error.sigma * np.random.default_rng(seed).standard_normal(nominal.shape)
    bounds = valid_range(object_shape, N)
    return np.clip(true, bounds[:, 0], bounds[:, 1])


def position_error(estimate: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """How far ``estimate (M, 2)`` positions are from the ``true`` ones, in pixels, after the
    one gauge a reconstruction cannot fix (a common shift of every position moves the object
    with them): ``rms`` of the per-position distance once the mean difference is removed,
    ``max`` of it, and the removed ``shift``'s length."""
    difference = np.asarray(estimate, np.float64) - np.asarray(true, np.float64)
    shift = difference.mean(axis=0)
    distance = np.hypot(*(difference - shift).T)
    return {"rms": float(np.sqrt(np.mean(distance**2))), "max": float(distance.max()),
            "shift": float(np.hypot(*shift))}
