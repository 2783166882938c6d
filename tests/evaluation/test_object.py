"""``evaluate`` scores any arm's finished object on the scan's region: a whole object (an
iterative engine's) scores exactly as the stitch of its own patches (a network's)."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho import physics
from ptycho.data import disc_probe
from ptycho.evaluation import evaluate
from ptycho.evaluation.alignment import scanned_region
from ptycho.reconstruction.stitch import scan_weight
from ptycho.reconstruction.synchronise import synchronise_and_stitch


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (64, 72)
    amplitude = 0.5 + 0.5 * rng.random(shape)
    truth = (amplitude * np.exp(1j * rng.uniform(-2, 2, shape))).astype(np.complex64)
    grid = np.arange(14, 51, 6, dtype=np.float64)
    positions = np.array([(x, y) for y in grid for x in np.arange(14, 59, 6)], np.float64)
    noise = 0.1 * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    return truth, (truth + noise).astype(np.complex64), positions


def test_the_object_path_and_the_patch_path_agree_on_the_same_image() -> None:
    truth, image, positions = _scene()
    N = 16
    patches = physics.extract_patches(image[None], positions[None].astype(np.float32), N)[0]
    stitched = synchronise_and_stitch(patches.numpy(), positions, truth.shape,
                                      probe=disc_probe(N), keep_fraction=0.5,
                                      phase_sync="overlap", stitch_weighting="probe").obj
    coverage = scan_weight(positions, N, truth.shape, keep_fraction=0.5)
    score = {"border": 2, "phase_alignment": "plane", "subpixel_registration": False}
    from_patches = evaluate(stitched, truth, coverage, **score)
    from_object = evaluate(image, truth, coverage, **score)
    assert from_patches.region == from_object.region
    for key, value in from_patches.metrics.items():
        assert from_object.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert from_object.metrics["amp_ssim"] < 0.99  # a real difference was scored

    # On the ground truth itself both paths are perfect.
    perfect = evaluate(truth, truth, coverage, **score)
    assert perfect.metrics["amp_ssim"] == pytest.approx(1.0)
    assert perfect.metrics["phase_mae"] == pytest.approx(0.0, abs=1e-6)


def test_the_region_is_the_scanned_one_and_bad_shapes_are_refused() -> None:
    truth, image, positions = _scene()
    weight = scan_weight(positions, 16, truth.shape, keep_fraction=0.5)
    rows, cols = scanned_region(weight, 2)
    assert weight[rows, cols].min() > 0  # every scored pixel is covered by the scan
    assert (rows.start, cols.start) > (0, 0) and (rows.stop, cols.stop) < truth.shape
    with pytest.raises(ValueError, match=r"image must have the object's shape \(64, 72\)"):
        evaluate(image[:-1], truth, weight, border=2, phase_alignment="plane",
                 subpixel_registration=False)
