"""Grouping for ``gridsize`` g: each sample is ``C = g²`` neighbouring scan positions.

A group is a seed position plus its ``C − 1`` nearest neighbours (``scipy.spatial.cKDTree``),
ordered by distance to the seed. The network sees the group's diffraction stacked as channels
``(N, N, C)`` and the positions relative to the group centre ``(C, 2)``; its overlap constraint
places the ``C`` patches on a canvas of side ``canvas_size`` derived from the offsets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ptycho.checks import check_gridsize, check_patch_size

__all__ = ["Groups", "canvas_size", "check_canvas", "group_positions"]


@dataclass(frozen=True)
class Groups:
    """Groups of scan positions.

    Attributes:
        indices: ``(G, C)`` int64 indices into the dataset's positions; column 0 is the seed.
        offsets: ``(G, C, 2)`` float32 ``(x, y)`` pixels relative to the group centre.
        centres: ``(G, 2)`` float64 ``(x, y)`` group centres on the object grid.
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


def group_positions(
    positions: np.ndarray, gridsize: int, *, n_groups: int | None = None, seed: int = 0
) -> Groups:
    """Form groups of ``gridsize²`` nearest neighbours.

    Args:
        positions: ``(M, 2)`` float64 ``(x, y)`` pixels.
        gridsize: g ≥ 1.
        n_groups: number of groups; ``None`` uses every position as a seed once (``G = M``).
            Must not exceed the number of positions.
        seed: chooses the seed positions when ``n_groups < M``.
    """
    gridsize = check_gridsize(gridsize)
    positions = np.asarray(positions, dtype=np.float64)
    n_positions = positions.shape[0]
    channels = gridsize**2
    if n_groups is None:
        n_groups = n_positions
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
    centres = members.mean(axis=1)
    offsets = (members - centres[:, None, :]).astype(np.float32)
    return Groups(indices=indices, offsets=offsets, centres=centres, gridsize=gridsize)


def canvas_size(offsets: np.ndarray, N: int) -> int:
    """Smallest even canvas side that holds every group: ``N + 2·⌈max|offset| + 1⌉``.

    The ``+1`` keeps the bilinear support of a sub-pixel patch on the canvas.
    """
    N = check_patch_size(N)
    offsets = np.asarray(offsets, dtype=np.float64)
    reach = float(np.abs(offsets).max()) if offsets.size else 0.0
    side = N + 2 * math.ceil(reach + 1.0)
    return side + (side % 2)


def check_canvas(offsets: np.ndarray, N: int, canvas: int) -> None:
    """Raise ``ValueError`` when a group's patches do not fit a ``canvas × canvas`` canvas."""
    N = check_patch_size(N)
    offsets = np.asarray(offsets, dtype=np.float64)
    reach = float(np.abs(offsets).max()) if offsets.size else 0.0
    limit = (canvas - N) / 2 - 1
    if reach > limit:
        group = int(np.argmax(np.abs(offsets).reshape(len(offsets), -1).max(axis=1)))
        raise ValueError(
            f"canvas={canvas} is too small for N={N}: group {group} reaches {reach:.2f} px "
            f"from its centre, the canvas holds at most {limit:.2f} px (need canvas >= "
            f"{canvas_size(offsets, N)})"
        )
