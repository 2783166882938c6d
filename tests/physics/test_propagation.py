"""Far field: unitary (Parseval), centred (DC at N/2), and the same under XLA."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ptycho import physics


def _random_field(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


@pytest.mark.parametrize("N", [16, 32, 64])
def test_parseval_energy_is_conserved(N: int) -> None:
    exit_wave = _random_field((5, N, N), seed=N)
    far = physics.far_field(exit_wave).numpy()
    energy_in = np.sum(np.abs(exit_wave.astype(np.complex128)) ** 2, axis=(1, 2))
    energy_out = np.sum(np.abs(far.astype(np.complex128)) ** 2, axis=(1, 2))
    np.testing.assert_allclose(energy_out, energy_in, rtol=1e-5)


@pytest.mark.parametrize("N", [16, 64])
def test_flat_field_has_its_dc_at_the_centre(N: int) -> None:
    flat = np.ones((1, N, N), np.complex64)
    far_intensity = physics.intensity(physics.far_field(flat)).numpy()[0]
    peak = np.unravel_index(np.argmax(far_intensity), far_intensity.shape)
    assert peak == (N // 2, N // 2)
    # All the energy (N² for a unit field) sits in that one pixel.
    assert far_intensity[N // 2, N // 2] == pytest.approx(N * N, rel=1e-6)
    far_intensity[N // 2, N // 2] = 0
    assert far_intensity.max() < 1e-6


def test_illuminate_multiplies_by_the_probe_on_every_patch() -> None:
    probe = _random_field((16, 16), seed=1)
    patches = _random_field((3, 16, 16), seed=2)
    exit_wave = physics.illuminate(probe, patches).numpy()
    np.testing.assert_allclose(exit_wave, patches * probe, rtol=1e-6)


def test_far_field_matches_numpy_and_runs_under_xla() -> None:
    exit_wave = _random_field((4, 32, 32), seed=3)
    expected = np.fft.fftshift(np.fft.fft2(exit_wave), axes=(-2, -1)) / 32
    compiled = tf.function(physics.far_field, jit_compile=True)
    np.testing.assert_allclose(physics.far_field(exit_wave).numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(compiled(tf.constant(exit_wave)).numpy(), expected, atol=1e-4)


def test_far_field_refuses_non_square_images() -> None:
    with pytest.raises(ValueError, match="square"):
        physics.far_field(np.ones((2, 16, 8), np.complex64))
