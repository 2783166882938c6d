"""Grouping for gridsize g: shapes, nearest neighbours, offsets and canvas validation."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.data import canvas_size, check_canvas, group_positions, random_positions


@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_group_shapes_and_nearest_neighbours(gridsize: int) -> None:
    positions = random_positions(60, (80, 80), 16, seed=0)
    groups = group_positions(positions, gridsize)
    channels = gridsize**2
    assert groups.indices.shape == (60, channels)
    assert groups.offsets.shape == (60, channels, 2) and groups.offsets.dtype == np.float32
    assert groups.centres.shape == (60, 2)
    assert len(groups) == 60 and groups.channels == channels
    np.testing.assert_array_equal(groups.indices[:, 0], np.arange(60))  # seed first
    np.testing.assert_allclose(groups.offsets.mean(axis=1), 0.0, atol=1e-4)
    for seed, members in enumerate(groups.indices):
        distance = np.linalg.norm(positions - positions[seed], axis=1)
        expected = np.sort(distance)[:channels]
        np.testing.assert_allclose(np.sort(distance[members]), expected)
    np.testing.assert_allclose(
        groups.offsets, positions[groups.indices] - groups.centres[:, None], atol=1e-4
    )


def test_fewer_groups_are_drawn_with_the_seed() -> None:
    positions = random_positions(40, (80, 80), 16, seed=1)
    first = group_positions(positions, 2, n_groups=10, seed=5)
    again = group_positions(positions, 2, n_groups=10, seed=5)
    assert first.indices.shape == (10, 4)
    np.testing.assert_array_equal(first.indices, again.indices)


def test_more_groups_than_positions_is_refused() -> None:
    positions = random_positions(10, (80, 80), 16, seed=1)
    with pytest.raises(ValueError, match="n_groups=11 asks for more groups than the 10"):
        group_positions(positions, 1, n_groups=11)
    with pytest.raises(ValueError, match="gridsize=4 needs 16 positions"):
        group_positions(positions, 4)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_gridsize_is_refused_with_its_value(bad: object) -> None:
    positions = random_positions(10, (80, 80), 16, seed=1)
    with pytest.raises(ValueError, match=f"gridsize must be an integer >= 1, got {bad!r}"):
        group_positions(positions, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_canvas_size_holds_every_group_and_smaller_canvases_are_refused(gridsize: int) -> None:
    positions = random_positions(50, (100, 100), 32, seed=2)
    groups = group_positions(positions, gridsize)
    side = canvas_size(groups.offsets, 32)
    assert side % 2 == 0 and side >= 32
    check_canvas(groups.offsets, 32, side)
    if gridsize > 1:
        with pytest.raises(ValueError, match=f"canvas={side - 4} is too small for N=32"):
            check_canvas(groups.offsets, 32, side - 4)
