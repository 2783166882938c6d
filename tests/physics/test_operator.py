"""The ptychographic operator: its two spellings of the patch cut agree, its adjoint is one, it
is the forward model of simulation, and the PINN's Keras layers compute the same counts."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ptycho import physics
from ptycho.data import disc_probe, simulate
from ptycho.models import FarFieldIntensity, IntensityScale, ProbeIllumination

N, SHAPE = 16, (40, 44)


def _scan(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random complex object, an asymmetric probe and sub-pixel positions."""
    rng = np.random.default_rng(seed)
    obj = (0.5 + rng.random(SHAPE)) * np.exp(1j * rng.uniform(-1, 1, SHAPE))
    probe = disc_probe(N) * np.exp(0.3j * np.arange(N))[None, :]
    positions = rng.uniform(9.0, 30.0, (7, 2))
    return obj.astype(np.complex64), probe.astype(np.complex64), positions


def _inner(a: np.ndarray, b: np.ndarray) -> complex:
    return complex(np.vdot(np.asarray(a, np.complex128), np.asarray(b, np.complex128)))


def test_the_adjoint_is_the_adjoint_and_the_taps_are_the_separable_cut() -> None:
    obj, probe, positions = _scan()
    operator = physics.Ptychography(probe, positions, SHAPE, chunk_size=3)  # chunks: 3, 3, 1
    rng = np.random.default_rng(1)
    field = (rng.standard_normal((7, N, N)) + 1j * rng.standard_normal((7, N, N))).astype(
        np.complex64)
    forward = operator.far_field(obj).numpy()
    assert _inner(forward, field) == pytest.approx(
        _inner(obj, operator.adjoint(tf.constant(field)).numpy()), rel=1e-4)
    taps_forward, taps_adjoint = operator.linear()
    batch = tf.constant(np.stack([obj.ravel(), 1j * obj.ravel()]))
    np.testing.assert_allclose(taps_forward(batch).numpy()[0], forward, atol=1e-5)
    np.testing.assert_allclose(taps_adjoint(tf.constant(field[None])).numpy()[0],
                               operator.adjoint(tf.constant(field)).numpy().ravel(), atol=1e-4)
    # the patches cut once (physics.extract_patches) and in chunks are the same
    whole = physics.extract_patches(obj[None], positions[None].astype(np.float32), N)[0]
    np.testing.assert_array_equal(operator.patches(obj).numpy(), whole.numpy())


def test_the_block_cut_is_the_separable_cut_and_its_spread_is_its_adjoint() -> None:
    """:class:`~ptycho.physics.PatchBlocks` cuts what ``extract_patches`` cuts (positions partly
    off the object included, where both read zeros), spreads by the exact adjoint, and keeps
    batch items apart."""
    obj, _, positions = _scan(3)
    positions = np.concatenate([positions, [[2.0, 3.5], [41.7, 38.2]]])  # hanging off the edges
    blocks = physics.PatchBlocks(positions, N, SHAPE)
    separable = physics.extract_patches(obj[None], positions[None].astype(np.float32), N)[0]
    pair = tf.constant(np.stack([obj, np.conj(obj) * 2]))
    cut = blocks.cut(pair).numpy()
    np.testing.assert_allclose(cut[0], separable.numpy(), atol=2e-6)
    np.testing.assert_allclose(cut[1], 2 * np.conj(separable.numpy()), atol=4e-6)
    rng = np.random.default_rng(4)
    patches = (rng.standard_normal((2, len(positions), N, N))
               + 1j * rng.standard_normal((2, len(positions), N, N))).astype(np.complex64)
    spread = blocks.spread(tf.constant(patches)).numpy()
    assert _inner(cut, patches) == pytest.approx(_inner(pair.numpy(), spread), rel=1e-5)
    np.testing.assert_allclose(spread[1], blocks.spread(tf.constant(patches[1:])).numpy()[0],
                               atol=1e-5)


def test_simulation_draws_from_the_operator_at_its_dose() -> None:
    obj, probe, positions = _scan(2)
    operator = physics.Ptychography(probe, positions, SHAPE)
    data = simulate(obj, probe, positions, dose=1e5, seed=3)
    scale = operator.dose_scale(obj, 1e5)
    expected = scale * operator.intensities(obj).numpy()
    assert expected.sum(axis=(1, 2)).mean() == pytest.approx(1e5, rel=1e-5)
    np.testing.assert_allclose(
        physics.expected_counts_at_dose(data.patches, probe, 1e5).numpy(), expected, rtol=1e-5)
    # illumination: the adjoint of the cut applied to |P|², and a global phase changes nothing
    np.testing.assert_allclose(operator.illumination(), operator.place(
        tf.constant(np.abs(probe) ** 2)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(operator.intensities(obj * np.exp(0.7j)).numpy(),
                               operator.intensities(obj).numpy(), rtol=1e-4, atol=1e-7)


def test_the_pinns_physics_layers_compute_the_operators_counts() -> None:
    """Illumination → far field → intensity scale, the Keras layers' own graph, equal the
    operator's ``s² |A o|²`` on the object's patches."""
    obj, probe, positions = _scan(4)
    operator = physics.Ptychography(probe, positions, SHAPE)
    patches = operator.patches(obj)[..., None]  # (M, N, N, C=1), the layers' channels-last
    log_scale = 1.3
    counts = IntensityScale(log_scale)(FarFieldIntensity()(
        ProbeIllumination(N, probe=probe)(patches)))
    np.testing.assert_allclose(counts.numpy()[..., 0],
                               np.exp(2 * log_scale) * operator.intensities(obj).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"probe must have shape \(N, N\)"):
        physics.Ptychography(np.ones((16, 8)), np.zeros((2, 2)), SHAPE)
    with pytest.raises(ValueError, match=r"positions must have shape \(M, 2\)"):
        physics.Ptychography(np.ones((16, 16)), np.zeros((2, 3)), SHAPE)
