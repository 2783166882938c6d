"""Dose scaling and photon counting noise.

``dose`` is the expected total photon count per diffraction pattern, averaged over a dataset
(PHYSICS.md §1–2): ``λ = s² · I`` with ``s² = dose / mean_j Σ_pixels I_j``, then ``k ~ Poisson(λ)``.
Randomness is an argument: sampling is stateless and fully determined by ``seed``.
"""

from __future__ import annotations

import tensorflow as tf

from ptycho.checks import check_dose

__all__ = ["dose_scale", "expected_counts", "poisson_counts"]


def dose_scale(intensities: tf.Tensor, dose: float) -> tf.Tensor:
    """Scale ``s²`` (float32 scalar) giving ``s² · intensities`` a mean total of ``dose``.

    Args:
        intensities: ``(M, N, N)`` float32 far-field intensities ``|F|²`` (arbitrary units).
        dose: requested mean photons per pattern, positive and finite.
    """
    dose = check_dose(dose)
    intensities = tf.convert_to_tensor(intensities, tf.float32)
    # Sum in float64: a dataset can hold 10⁵ patterns of 128² pixels.
    per_pattern = tf.reduce_sum(tf.cast(intensities, tf.float64), axis=(-2, -1))
    mean_total = tf.reduce_mean(per_pattern)
    tf.debugging.assert_positive(mean_total, message="dose_scale: the patterns carry no intensity")
    return tf.cast(dose / mean_total, tf.float32)


def expected_counts(intensities: tf.Tensor, scale: tf.Tensor | float) -> tf.Tensor:
    """Expected photon counts ``λ = s² · I`` (float32, photons per pixel)."""
    return tf.convert_to_tensor(intensities, tf.float32) * tf.cast(scale, tf.float32)


def poisson_counts(expected: tf.Tensor, seed: int) -> tf.Tensor:
    """Draw photon counts ``k ~ Poisson(λ)`` (integers stored as float32), stateless and seeded.

    Args:
        expected: ``(...)`` float32 expected counts λ ≥ 0, photons per pixel.
        seed: integer seed; the same seed and λ give bit-identical counts.
    """
    expected = tf.convert_to_tensor(expected, tf.float32)
    seed_pair = tf.constant([int(seed) % (2**31 - 1), 0x5EED], dtype=tf.int64)
    # Sample in float64 so that counts up to ~10⁹ per pixel are drawn exactly before storage.
    counts = tf.random.stateless_poisson(
        tf.shape(expected), seed=seed_pair, lam=tf.cast(expected, tf.float64), dtype=tf.float64
    )
    return tf.cast(counts, tf.float32)
