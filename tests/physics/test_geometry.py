"""Translation, extraction, overlap-add and the least-squares merge: orientation against scipy,
one shift per image, samples never mixed (eager and XLA), exact reassembly of exact patches, and
true sub-pixel patches through the merge changed by at most 1e-3."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from ptycho import physics


def _scipy_shift(image: np.ndarray, tx: float, ty: float) -> np.ndarray:
    # grid-constant: zero outside the image *and* interpolation towards it, like ours.
    return ndimage.shift(image, (ty, tx), order=1, mode="grid-constant", cval=0.0)


@pytest.mark.parametrize("shift", [(2.0, 3.0), (-4.0, 1.0), (1.25, -0.5), (-2.75, 3.4)])
def test_translate_moves_a_bright_pixel_like_scipy(shift: tuple[float, float]) -> None:
    tx, ty = shift
    image = np.zeros((1, 16, 16), np.float32)
    image[0, 6, 5] = 1.0  # row 6, column 5
    moved = physics.translate(image, np.array([[tx, ty]], np.float32)).numpy()[0]
    np.testing.assert_allclose(moved, _scipy_shift(image[0], tx, ty), atol=1e-6)
    if float(tx).is_integer() and float(ty).is_integer():
        # Absolute orientation: +tx columns, +ty rows.
        assert moved[int(6 + ty), int(5 + tx)] == pytest.approx(1.0)
        assert moved.sum() == pytest.approx(1.0)


def test_translate_random_images_like_scipy_one_shift_each() -> None:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 20, 24)).astype(np.float32)
    shifts = np.array([[0, 0], [3, -2], [0.4, 0.7], [-5.6, 2.2]], np.float32)
    moved = physics.translate(images, shifts).numpy()
    for image, (tx, ty), result in zip(images, shifts, moved, strict=True):
        np.testing.assert_allclose(result, _scipy_shift(image, tx, ty), atol=1e-5)


def test_translate_complex_images_acts_on_real_and_imaginary_parts() -> None:
    rng = np.random.default_rng(1)
    images = (rng.standard_normal((2, 16, 16)) + 1j * rng.standard_normal((2, 16, 16))).astype(
        np.complex64
    )
    shifts = np.array([[1.5, -0.25], [-3.0, 2.0]], np.float32)
    moved = physics.translate(images, shifts).numpy()
    for image, (tx, ty), result in zip(images, shifts, moved, strict=True):
        expected = _scipy_shift(image.real, tx, ty) + 1j * _scipy_shift(image.imag, tx, ty)
        np.testing.assert_allclose(result, expected, atol=1e-5)


def test_translate_refuses_mismatched_batch_sizes() -> None:
    images = np.zeros((3, 8, 8), np.float32)
    with pytest.raises(ValueError, match="one shift per image"):
        physics.translate(images, np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="one shift per image"):
        physics.translate(images, np.zeros((1, 2), np.float32))  # no silent broadcasting


def test_translate_refuses_mismatch_with_dynamic_shapes() -> None:
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 8, 8], tf.float32),
            tf.TensorSpec([None, 2], tf.float32),
        ]
    )
    def dynamic(images: tf.Tensor, shifts: tf.Tensor) -> tf.Tensor:
        return physics.translate(images, shifts)

    with pytest.raises(tf.errors.InvalidArgumentError, match="one shift per image"):
        dynamic(tf.zeros((4, 8, 8)), tf.zeros((2, 2)))


def test_translate_passes_gradients_to_images_and_shifts() -> None:
    image = tf.constant(np.random.default_rng(2).random((1, 12, 12)), tf.float32)
    shift = tf.Variable([[0.3, -0.6]], dtype=tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(image)
        loss = tf.reduce_sum(physics.translate(image, shift) ** 2 * tf.range(12.0))
    assert np.all(np.isfinite(tape.gradient(loss, shift).numpy()))
    assert np.abs(tape.gradient(loss, shift).numpy()).sum() > 0
    assert np.abs(tape.gradient(loss, image).numpy()).sum() > 0


def test_extract_patches_orientation_at_integer_positions() -> None:
    rng = np.random.default_rng(3)
    obj = (rng.random((40, 48)) + 1j * rng.random((40, 48))).astype(np.complex64)
    positions = np.array([[[20.0, 16.0], [30.0, 25.0]]], np.float32)  # (x, y)
    patches = physics.extract_patches(obj[None], positions, 16).numpy()[0]
    np.testing.assert_allclose(patches[0], obj[8:24, 12:28], atol=1e-6)
    np.testing.assert_allclose(patches[1], obj[17:33, 22:38], atol=1e-6)


def test_extract_patches_subpixel_agrees_with_scipy_shift() -> None:
    rng = np.random.default_rng(4)
    obj = rng.random((40, 40)).astype(np.float32)
    x, y = 19.3, 21.6
    patch = physics.extract_patches(obj[None], np.array([[[x, y]]], np.float32), 16).numpy()
    # Moving the object by (8 - x, 8 - y) puts (x, y) on pixel (8, 8): the patch is its corner.
    expected = _scipy_shift(obj, 8 - x, 8 - y)[:16, :16]
    np.testing.assert_allclose(patch[0, 0], expected, atol=1e-5)


def test_place_patches_is_the_adjoint_of_extract_patches() -> None:
    rng = np.random.default_rng(5)
    image = rng.standard_normal((2, 30, 30)).astype(np.float32)
    patches = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    positions = rng.uniform(9, 20, size=(2, 3, 2)).astype(np.float32)
    forward = np.sum(physics.extract_patches(image, positions, 16).numpy() * patches)
    adjoint = np.sum(image * physics.place_patches(patches, positions, (30, 30)).numpy())
    assert forward == pytest.approx(adjoint, rel=1e-4)


def _overlap_inputs(batch: int, channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (batch, channels, 16, 16)
    patches = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    positions = rng.uniform(10, 14, size=(batch, channels, 2)).astype(np.float32)
    return patches, positions


@pytest.mark.parametrize(("batch", "channels"), [(1, 1), (7, 9), (63, 1), (16, 4), (13, 5),
                                                 (65, 1), (64, 4)])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
def test_overlap_add_never_mixes_samples(batch: int, channels: int, compiled: bool) -> None:
    """B·C ∈ {1, 63, 64, 65, 256}: perturbing sample j changes only sample j's canvas."""
    patches, positions = _overlap_inputs(batch, channels, seed=batch * 10 + channels)

    def merge(patches: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
        return physics.overlap_add(patches, positions, (24, 24))[0]

    fn = tf.function(merge, jit_compile=True) if compiled else merge
    before = fn(tf.constant(patches), tf.constant(positions)).numpy()
    j = batch // 2
    perturbed = patches.copy()
    perturbed[j] += 1.0 + 0.5j
    after = fn(tf.constant(perturbed), tf.constant(positions)).numpy()
    others = np.arange(batch) != j
    np.testing.assert_array_equal(after[others], before[others])
    assert np.abs(after[j] - before[j]).max() > 0.1


def test_extract_then_merge_reproduces_the_object_in_the_covered_interior() -> None:
    rng = np.random.default_rng(6)
    obj = (rng.random((48, 48)) + 1j * rng.random((48, 48))).astype(np.complex64)
    positions = rng.integers(8, 40, size=(1, 50, 2)).astype(np.float32)
    patches = physics.extract_patches(obj[None], positions, 16)
    merged, weight = physics.overlap_add(patches, positions, (48, 48))
    covered = weight.numpy()[0] >= 1.0
    assert covered.mean() > 0.5
    np.testing.assert_allclose(merged.numpy()[0][covered], obj[covered], atol=1e-5)


def test_overlap_add_under_xla_matches_eager() -> None:
    patches, positions = _overlap_inputs(4, 4, seed=9)
    eager = physics.overlap_add(patches, positions, (24, 24))[0].numpy()
    xla = tf.function(
        lambda p, q: physics.overlap_add(p, q, (24, 24))[0], jit_compile=True
    )(tf.constant(patches), tf.constant(positions)).numpy()
    np.testing.assert_allclose(xla, eager, atol=1e-5)


def _true_groups(N: int, gridsize: int, n_positions: int, seed: int = 0):
    """Patches cut from the default lines object at a jittered sub-pixel raster, grouped as the
    job groups them: ``(patches (G, C, N, N), canvas positions (G, C, 2), canvas side, probe)``."""
    from ptycho.config import DataConfig, ObjectConfig
    from ptycho.data import SimulationSpec, canvas_size, group_positions, make_datasets

    spec = SimulationSpec(N=N, dose=1e6, seed=seed, data=DataConfig(
        object=ObjectConfig(size=3 * N), n_train=n_positions))
    data = make_datasets(spec).train
    groups = group_positions(data.positions, gridsize, seed=seed)
    side = canvas_size(groups.offsets, N)
    return (data.patches[groups.indices], groups.offsets + side / 2, side, data.probe)


def _probe_weighted_error(merged: np.ndarray, patches: np.ndarray, probe: np.ndarray) -> float:
    """``‖P·(merged − p)‖ / ‖P·p‖`` over all patches: the change the data can see."""
    return float(np.linalg.norm(probe * (merged - patches)) / np.linalg.norm(probe * patches))


@pytest.mark.parametrize(("N", "gridsize"), [(32, 2), (16, 3)])
def test_true_patches_survive_the_least_squares_merge(N: int, gridsize: int) -> None:
    """The overlap constraint's merge and re-cut leave true patches of a sub-pixel scan changed by
    ≤ 1e-3 of their probe-weighted norm (below Poisson noise up to ~1e8 photons per pattern);
    normalised overlap-add alone changes them by ~2%."""
    patches, positions, side, probe = _true_groups(N, gridsize, 100)

    def round_trip(iterations: int) -> np.ndarray:
        canvas = physics.merge_patches(patches, positions, (side, side), iterations)
        return physics.extract_patches(canvas, positions, N).numpy()

    smoothed = _probe_weighted_error(round_trip(0), patches, probe)
    merged = _probe_weighted_error(round_trip(8), patches, probe)
    assert smoothed > 1e-2, smoothed
    assert merged <= 1e-3, merged


def test_merge_with_no_iterations_is_overlap_add_and_never_mixes_samples() -> None:
    patches, positions = _overlap_inputs(6, 4, seed=3)
    np.testing.assert_array_equal(
        physics.merge_patches(patches, positions, (24, 24), 0).numpy(),
        physics.overlap_add(patches, positions, (24, 24))[0].numpy())
    fn = tf.function(lambda p, q: physics.merge_patches(p, q, (24, 24), 4), jit_compile=True)
    before = fn(tf.constant(patches), tf.constant(positions)).numpy()
    eager = physics.merge_patches(patches, positions, (24, 24), 4).numpy()
    np.testing.assert_allclose(before, eager, atol=1e-4)
    perturbed = patches.copy()
    perturbed[2] += 1.0 + 0.5j
    after = fn(tf.constant(perturbed), tf.constant(positions)).numpy()
    others = np.arange(6) != 2
    np.testing.assert_array_equal(after[others], before[others])


def test_merge_passes_finite_gradients_even_for_consistent_groups() -> None:
    """A consistent group has a zero residual: the conjugate-gradient steps divide 0 by 0
    unless guarded; gradients must stay finite."""
    patches, positions, side, _ = _true_groups(16, 2, 24)
    patches = tf.constant(patches[:4])
    with tf.GradientTape() as tape:
        tape.watch(patches)
        canvas = physics.merge_patches(patches, positions[:4], (side, side), 8)
        loss = tf.reduce_sum(tf.abs(physics.extract_patches(canvas, positions[:4], 16)) ** 2)
    gradient = tape.gradient(loss, patches).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0


def test_merge_rejects_a_bad_iteration_count() -> None:
    patches, positions = _overlap_inputs(1, 4, seed=0)
    with pytest.raises(ValueError, match=r"iterations must be an integer >= 0, got -1"):
        physics.merge_patches(patches, positions, (24, 24), -1)
