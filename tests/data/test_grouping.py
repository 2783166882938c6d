"""Grouping for gridsize g: shapes, nearest neighbours, offsets and canvas validation."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.data import (
    canvas_size,
    check_canvas,
    group_positions,
    random_positions,
    raster_positions,
)


@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_group_shapes_and_nearest_neighbours(gridsize: int) -> None:
    positions = random_positions(60, (80, 80), 16, seed=0)
    groups = group_positions(positions, gridsize, seed=0)
    channels = gridsize**2
    assert groups.indices.shape == (60, channels)
    assert groups.offsets.shape == (60, channels, 2) and groups.offsets.dtype == np.float32
    assert groups.centres.shape == (60, 2)
    assert len(groups) == 60 and groups.channels == channels
    np.testing.assert_array_equal(groups.indices[:, 0], np.arange(60))  # seed first
    # The centre is the members' mean rounded to a whole pixel (the canvas lies on the object's
    # pixel grid), so offsets keep their positions' fractional parts.
    np.testing.assert_array_equal(groups.centres, np.round(groups.centres))
    assert np.abs(groups.offsets.mean(axis=1)).max() <= 0.5 + 1e-4
    np.testing.assert_allclose(np.mod(groups.offsets, 1.0) % 1.0,
                               np.mod(positions[groups.indices], 1.0) % 1.0, atol=2e-4)
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
        group_positions(positions, 1, n_groups=11, seed=0)
    with pytest.raises(ValueError, match="gridsize=4 needs 16 positions"):
        group_positions(positions, 4, seed=0)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_gridsize_is_refused_with_its_value(bad: object) -> None:
    positions = random_positions(10, (80, 80), 16, seed=1)
    with pytest.raises(ValueError, match=f"gridsize must be an integer >= 1, got {bad!r}"):
        group_positions(positions, bad, seed=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_canvas_size_holds_every_group_and_smaller_canvases_are_refused(gridsize: int) -> None:
    positions = random_positions(50, (100, 100), 32, seed=2)
    groups = group_positions(positions, gridsize, seed=0)
    side = canvas_size(groups.offsets, 32)
    assert side % 2 == 0 and side >= 32
    check_canvas(groups.offsets, 32, side)
    if gridsize > 1:
        with pytest.raises(ValueError, match=f"canvas={side - 4} is too small for N=32"):
            check_canvas(groups.offsets, 32, side - 4)


def _quickstart_groups(gridsize: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test group offsets of the quickstart geometry (N=32, 96² object, 512 training
    and 144 test patterns, each a jittered raster over the valid region, as simulated)."""
    train = raster_positions(512, (96, 96), 32, seed=11, jitter=1.0)
    test = raster_positions(144, (96, 96), 32, seed=12, jitter=1.0)
    return (group_positions(train, gridsize, seed=0).offsets,
            group_positions(test, gridsize, seed=0).offsets)


def test_the_canvas_holds_the_test_groups_when_sized_from_train_and_test() -> None:
    """Regression: the canvas was sized from the training groups only; the test raster is
    coarser, so most test groups at gridsize 2 reached beyond it (silently cut off)."""
    train, test = _quickstart_groups(2)
    from_train = canvas_size(train, 32)
    check_canvas(train, 32, from_train)
    # The old sizing: most test groups do not fit, and the refusal says how many.
    with pytest.raises(ValueError, match=r"canvas=\d+ is too small for N=32: (\d+) of 144 groups"
                       ) as refused:
        check_canvas(test, 32, from_train)
    exceeding = int(str(refused.value).split(": ")[1].split(" of ")[0])
    assert exceeding > 0.5 * len(test)
    # The union sizing holds every train and test group.
    union = canvas_size([train, test], 32)
    assert union > from_train and union % 2 == 0
    assert union == canvas_size(np.concatenate([train, test]), 32)
    check_canvas([train, test], 32, union)
    with pytest.raises(
        ValueError, match=rf"(\d+) of 656 groups \(array 0: 0 of 512, array 1: {exceeding} of 144\)"
    ):
        check_canvas([train, test], 32, from_train)


def test_bad_offsets_are_refused_with_their_shape() -> None:
    with pytest.raises(ValueError, match=r"offsets array 1 must have shape \(G, C, 2\).*\(4, 2\)"):
        canvas_size([np.zeros((3, 4, 2)), np.zeros((4, 2))], 32)
    with pytest.raises(ValueError, match="at least one"):
        canvas_size([], 32)
    with pytest.raises(ValueError, match="canvas must be an integer"):
        check_canvas(np.zeros((3, 4, 2)), 32, 40.5)  # type: ignore[arg-type]
    # Empty groups (no test groups) add nothing.
    assert canvas_size([np.zeros((0, 4, 2)), np.ones((2, 4, 2))], 32) == 32 + 2 * 2
