"""Grouping for ``gridsize`` g: each sample is ``C = g²`` neighbouring scan positions.

A group is a seed position plus its ``C − 1`` nearest neighbours (``scipy.spatial.cKDTree``),
ordered by distance to the seed. The network sees the group's diffraction stacked as channels
``(N, N, C)`` and the positions relative to the group centre ``(C, 2)``; its overlap constraint
places the ``C`` patches on a canvas of side ``canvas_size`` derived from the offsets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ptycho.checks import check_gridsize, check_patch_size

__all__ = [
    "Groups", "OffsetArrays", "canvas_size", "check_canvas", "check_matched_groups",
    "concatenate_groups", "group_positions", "group_reach", "holdout_region"
]


@dataclass(frozen=True)
class Groups:
    """Groups of scan positions.

    Attributes:
        indices: ``(G, C)`` int64 indices into the dataset's positions; column 0 is the seed.
        offsets: ``(G, C, 2)`` float32 ``(x, y)`` pixels relative to the group centre.
        centres: ``(G, 2)`` float64 ``(x, y)`` group centres on the object grid: the mean of the
            group's positions rounded to a whole pixel, so an offset's fractional part is its
            position's and the overlap canvas (:class:`ptycho.models.OverlapConstraint`) lies on
            the object's pixel grid (true patches are then exactly consistent on it).
        gridsize: g, with ``C = g²``.
    """

    indices: np.ndarray
    offsets: np.ndarray
    centres: np.ndarray
    gridsize: int

    @property
    def channels(self) -> int:
        return self.gridsize**2

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def group_positions(positions: np.ndarray, gridsize: int, *, seed: int,
                    n_groups: int | None = None, among: np.ndarray | None = None) -> Groups:
    """Form groups of ``gridsize²`` nearest neighbours.

    Args:
        positions: ``(M, 2)`` float64 ``(x, y)`` pixels.
        gridsize: g ≥ 1.
        n_groups: number of groups; ``None`` uses every position as a seed once (``G = M``).
            Must not exceed the number of positions.
        seed: chooses the seed positions when ``n_groups < M``.
        among: ``(K,)`` int indices of the positions to group (e.g. the training or the
            validation patterns of :func:`holdout_region`): groups use those positions only, and
            their ``indices`` still point into ``positions``. ``None``: all of them.
    """
    gridsize = check_gridsize(gridsize)
    if among is not None:
        among = np.asarray(among, dtype=np.int64).reshape(-1)
        groups = group_positions(np.asarray(positions, np.float64)[among], gridsize, seed=seed,
                                 n_groups=n_groups)
        return Groups(indices=among[groups.indices], offsets=groups.offsets,
                      centres=groups.centres, gridsize=gridsize)
    positions = np.asarray(positions, dtype=np.float64)
    n_positions = positions.shape[0]
    channels = gridsize**2
    n_groups = n_positions if n_groups is None else n_groups
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 1:
        raise ValueError(f"n_groups must be an integer >= 1, got {n_groups!r}")
    if n_groups > n_positions:
        raise ValueError(
            f"n_groups={n_groups} asks for more groups than the {n_positions} positions available"
        )
    if channels > n_positions:
        raise ValueError(
            f"gridsize={gridsize} needs {channels} positions per group, only {n_positions} exist"
        )
    if n_groups == n_positions:
        seeds = np.arange(n_positions)
    else:
        seeds = np.sort(np.random.default_rng(seed).choice(n_positions, n_groups, replace=False))
    if channels == 1:
        indices = seeds[:, None]
    else:
        _, indices = cKDTree(positions).query(positions[seeds], k=channels)
    indices = np.asarray(indices, dtype=np.int64).reshape(n_groups, channels)
    members = positions[indices]
    # A whole-pixel centre: the canvas grid is the object grid shifted by whole pixels, so
    # bilinear patches of one object cut on it agree with the scan's (physics.merge_patches).
    centres = np.round(members.mean(axis=1))
    offsets = (members - centres[:, None, :]).astype(np.float32)
    return Groups(indices=indices, offsets=offsets, centres=centres, gridsize=gridsize)


def concatenate_groups(*parts: Groups) -> Groups:
    """The groups of ``parts`` in order (one gridsize), e.g. training then validation groups."""
    if not parts or len({part.gridsize for part in parts}) != 1:
        raise ValueError("concatenate_groups needs at least one Groups, all of one gridsize")
    return Groups(indices=np.concatenate([part.indices for part in parts]),
                  offsets=np.concatenate([part.offsets for part in parts]),
                  centres=np.concatenate([part.centres for part in parts]),
                  gridsize=parts[0].gridsize)


def holdout_region(positions: np.ndarray, count: int, *, seed: int) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """Split a scan into training and validation patterns by region.

    The validation patterns are the ``count`` positions nearest (Chebyshev distance: a square) to
    one scan position drawn with ``seed``: a compact patch of the object. Grouping each part on
    its own (``group_positions(..., among=...)``) then gives validation groups that share no
    pattern with any training group, so ``val_loss`` measures the fit to photons the network
    never trained on (a random split of overlapping groups cannot, at g > 1).

    Args:
        positions: ``(M, 2)`` float ``(x, y)`` pixels.
        count: validation patterns, ``0 ≤ count < M``.
        seed: draws the region's centre.

    Returns:
        ``(training (M − count,), validation (count,))`` sorted int64 indices into ``positions``.
    """
    positions = np.asarray(positions, dtype=np.float64)
    total = positions.shape[0]
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or not (
            0 <= count < total):
        raise ValueError(f"count must be an integer in [0, {total}), got {count!r}")
    if count == 0:
        return np.arange(total, dtype=np.int64), np.zeros(0, dtype=np.int64)
    centre = positions[np.random.default_rng(seed).integers(total)]
    distance = np.abs(positions - centre).max(axis=1)
    order = np.argsort(distance, kind="stable")
    return np.sort(order[count:]), np.sort(order[:count])


OffsetArrays = np.ndarray | Sequence[np.ndarray]
"""One ``(G, C, 2)`` offsets array, or a list/tuple of them (e.g. train and test groups)."""


def _offset_arrays(offsets: OffsetArrays) -> list[np.ndarray]:
    """``offsets`` as a list of ``(G, C, 2)`` float64 arrays; ``ValueError`` on a bad shape."""
    arrays = [offsets] if isinstance(offsets, np.ndarray) else list(offsets)
    if not arrays:
        raise ValueError("offsets: give at least one (G, C, 2) offsets array, got none")
    checked = []
    for number, array in enumerate(arrays):
        array = np.asarray(array, dtype=np.float64)
        if array.ndim != 3 or array.shape[-1] != 2:
            raise ValueError(
                f"offsets array {number} must have shape (G, C, 2) (Groups.offsets), "
                f"got {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"offsets array {number} must be finite, got NaN or Inf")
        checked.append(array)
    return checked


def _group_reach(offsets: np.ndarray) -> np.ndarray:
    """``(G,)`` largest ``|x|`` or ``|y|`` offset of each group, pixels."""
    return np.abs(offsets).max(axis=(1, 2), initial=0.0)


def group_reach(groups: Groups) -> np.ndarray:
    """``(G,)`` float64: each group's spread, the largest Chebyshev distance (pixels) between two
    of its members (independent of where the centre is rounded to)."""
    members = groups.offsets.astype(np.float64)
    spread = np.abs(members[:, :, None, :] - members[:, None, :, :]).max(axis=-1)
    return spread.max(axis=(1, 2))


def check_matched_groups(reference: Groups, other: Groups, *, what: str,
                         tolerance: float = 0.25) -> None:
    """Raise ``ValueError`` when ``other``'s groups are not shaped like ``reference``'s.

    A network trained on groups of one spread and scored on groups of another is scored out of
    distribution. The medians of :func:`group_reach` must agree within ``tolerance`` (relative);
    g = 1 (no spread) always passes.
    """
    if reference.gridsize == 1:
        return
    expected, seen = float(np.median(group_reach(reference))), float(
        np.median(group_reach(other)))
    if abs(seen - expected) > tolerance * expected:
        raise ValueError(
            f"{what}: groups spread {seen:.2f} px (median), training groups {expected:.2f} px; "
            f"groups of a different geometry are out of the network's training distribution "
            f"(allowed: within {tolerance:.0%})")


def canvas_size(offsets: OffsetArrays, N: int) -> int:
    """Smallest even canvas side that holds every group: ``N + 2·⌈max|offset| + 1⌉``.

    The ``+1`` keeps the bilinear support of a sub-pixel patch on the canvas.

    Args:
        offsets: ``(G, C, 2)`` float ``(x, y)`` offsets in pixels (:attr:`Groups.offsets`), or a
            list/tuple of such arrays: the canvas then holds the groups of all of them. Size the
            model's canvas from the train AND the test groups, ``[train.offsets, test.offsets]``:
            the test raster is coarser, so its groups spread further than the training ones.
        N: patch side, a power of two ≥ 16.

    Returns:
        The canvas side in pixels (even, ≥ ``N + 2``).
    """
    N = check_patch_size(N)
    reach = max(float(_group_reach(array).max(initial=0.0)) for array in _offset_arrays(offsets))
    side = N + 2 * math.ceil(reach + 1.0)
    return side + (side % 2)


def check_canvas(offsets: OffsetArrays, N: int, canvas: int) -> None:
    """Raise ``ValueError`` when any group's patches do not fit a ``canvas × canvas`` canvas.

    Args:
        offsets: ``(G, C, 2)`` offsets in pixels, or a list/tuple of such arrays (as for
            :func:`canvas_size`); every group of every array is checked.
        N: patch side, a power of two ≥ 16.
        canvas: canvas side in pixels.

    Raises:
        ValueError: naming how many groups (per array when several are given) reach beyond the
            canvas, the worst reach, and the canvas that would hold them all.
    """
    N = check_patch_size(N)
    if isinstance(canvas, bool) or not isinstance(canvas, int | np.integer):
        raise ValueError(f"canvas must be an integer number of pixels, got {canvas!r}")
    arrays = _offset_arrays(offsets)
    limit = (int(canvas) - N) / 2 - 1
    reaches = [_group_reach(array) for array in arrays]
    outside = [int(np.count_nonzero(reach > limit)) for reach in reaches]
    total_outside = sum(outside)
    if total_outside == 0:
        return
    total = sum(len(reach) for reach in reaches)
    worst = max(float(reach.max(initial=0.0)) for reach in reaches)
    per_array = ""
    if len(arrays) > 1:
        per_array = " (" + ", ".join(
            f"array {number}: {count} of {len(reach)}"
            for number, (count, reach) in enumerate(zip(outside, reaches, strict=True))
        ) + ")"
    raise ValueError(
        f"canvas={canvas} is too small for N={N}: {total_outside} of {total} groups"
        f"{per_array} reach beyond it (up to {worst:.2f} px from their centre; the canvas holds "
        f"at most {limit:.2f} px); need canvas >= {canvas_size(arrays, N)}"
    )
