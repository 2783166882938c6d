"""Physics layers: argument validation, config round trip, agreement with ptycho.physics."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from ptycho import physics
from ptycho.data import disc_probe
from ptycho.models import (
    ComplexPatches,
    FarFieldIntensity,
    IntensityScale,
    OverlapConstraint,
    ProbeIllumination,
)


def _patches(batch: int, channels: int, N: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (batch, N, N, channels)
    return (rng.random(shape) * np.exp(1j * rng.random(shape))).astype(np.complex64)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: OverlapConstraint(48, 2, 80), "N must be an integer power of two >= 16, got 48"),
        (lambda: OverlapConstraint(16, 0, 40), "gridsize must be an integer >= 1, got 0"),
        (lambda: OverlapConstraint(16, 2, 17), r"canvas_size must be >= N \+ 2 = 18, got 17"),
        (lambda: OverlapConstraint(16, 2, 40, merge_iterations=-2),
         "merge_iterations must be an integer >= 0, got -2"),
        (
            lambda: ProbeIllumination(16, probe=np.ones((8, 8))),
            r"probe must be a finite \(16, 16\)",
        ),
        (lambda: ProbeIllumination(16, trainable_probe="yes"), "trainable_probe must be a bool"),
        (lambda: IntensityScale(float("nan")), "log_scale must be a finite float, got nan"),
    ],
)
def test_layers_refuse_bad_arguments_quoting_the_value(factory, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize(
    "layer",
    [
        OverlapConstraint(16, 2, 40, merge_iterations=5, name="overlap"),
        ProbeIllumination(16, trainable_probe=True, probe=disc_probe(16), name="probe"),
        IntensityScale(2.5, name="scale"),
        FarFieldIntensity(name="far"),
        ComplexPatches(name="complex"),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_layers_round_trip_through_get_config(layer) -> None:
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    if layer.weights:
        clone.set_weights(layer.get_weights())
        for a, b in zip(clone.weights, layer.weights, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_layers_compute_what_physics_computes() -> None:
    patches = _patches(3, 4)
    probe = disc_probe(16)
    exit_wave = ProbeIllumination(16, probe=probe)(patches).numpy()
    np.testing.assert_allclose(exit_wave, patches * probe[None, :, :, None], rtol=1e-6)
    far = FarFieldIntensity()(exit_wave).numpy()
    expected = physics.intensity(physics.far_field(np.moveaxis(exit_wave, -1, 1))).numpy()
    np.testing.assert_allclose(far, np.moveaxis(expected, 1, -1), rtol=1e-5, atol=1e-6)
    scaled = IntensityScale(np.log(3.0))(far).numpy()
    np.testing.assert_allclose(scaled, 9.0 * far, rtol=1e-5)


def test_overlap_constraint_keeps_consistent_patches() -> None:
    """Patches cut from one object at integer offsets survive merge and re-cut unchanged."""
    rng = np.random.default_rng(1)
    canvas = 40
    obj = (rng.random((canvas, canvas)) + 1j * rng.random((canvas, canvas))).astype(np.complex64)
    offsets = np.array([[[-3.0, -2.0], [3.0, -2.0], [-3.0, 2.0], [3.0, 2.0]]], np.float32)
    cut = physics.extract_patches(obj[None], offsets + canvas / 2, 16)  # (1, 4, 16, 16)
    patches = tf.transpose(cut, (0, 2, 3, 1))
    out = OverlapConstraint(16, 2, canvas)(patches, offsets).numpy()
    np.testing.assert_allclose(out, patches.numpy(), atol=1e-5)


def test_overlap_constraint_keeps_sub_pixel_consistent_patches() -> None:
    """Patches cut from one object at sub-pixel offsets (group centre on a whole pixel) survive
    the least-squares merge to 1e-3; overlap-add alone smooths them by percent."""
    rng = np.random.default_rng(2)
    canvas = 40
    # Smooth like an imaged object (white noise puts most of its power at Nyquist, where a
    # half-pixel bilinear cut loses it).
    obj = ndimage.gaussian_filter(rng.random((canvas, canvas)), 1.0) + 1j * ndimage.gaussian_filter(
        rng.random((canvas, canvas)), 1.0)
    obj = obj.astype(np.complex64)
    offsets = np.array([[[-3.3, -2.6], [2.4, -2.1], [-2.7, 2.8], [3.1, 1.7]]], np.float32)
    cut = physics.extract_patches(obj[None], offsets + canvas / 2, 16)
    patches = tf.transpose(cut, (0, 2, 3, 1)).numpy()
    merged = OverlapConstraint(16, 2, canvas, merge_iterations=8)(patches, offsets).numpy()
    added = OverlapConstraint(16, 2, canvas, merge_iterations=0)(patches, offsets).numpy()
    inner = (slice(None), slice(3, -3), slice(3, -3))  # what a probe of radius ~0.3 N sees
    change = lambda out: np.linalg.norm((out - patches)[inner]) / np.linalg.norm(patches[inner])  # noqa: E731
    assert change(added) > 1e-2
    assert change(merged) < 1e-3


def test_overlap_constraint_with_gridsize_one_is_the_identity() -> None:
    patches = _patches(2, 1)
    out = OverlapConstraint(16, 1, 18)(patches, np.zeros((2, 1, 2), np.float32))
    np.testing.assert_array_equal(out.numpy(), patches)
