"""Dose scaling and photon counting noise.

``dose`` is the expected total photon count per diffraction pattern, averaged over a dataset
(docs/physics.md §3): ``λ = s² · I``, ``s² = dose / mean_j Σ_pixels I_j``; then ``k ~ Poisson(λ)``.
Randomness is an argument: sampling is stateless and fully determined by ``seed``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ptycho.physics.propagation import far_field, illuminate, intensity

__all__ = ["dose_scale", "expected_counts", "expected_counts_at_dose", "poisson_counts"]


def dose_scale(intensities: tf.Tensor, dose: float) -> tf.Tensor:
    """Scale ``s²`` (float32 scalar) giving ``s² · intensities`` a mean total of ``dose``.

    Args:
        intensities: ``(M, N, N)`` float32 far-field intensities ``|F|²`` (arbitrary units).
        dose: requested mean photons per pattern, positive and finite (checked at the edge:
            the config, :func:`ptycho.data.simulate`).
    """
    intensities = tf.convert_to_tensor(intensities, tf.float32)
    # Sum in float64: a dataset can hold 10⁵ patterns of 128² pixels.
    per_pattern = tf.reduce_sum(tf.cast(intensities, tf.float64), axis=(-2, -1))
    mean_total = tf.reduce_mean(per_pattern)
    tf.debugging.assert_positive(mean_total, message="dose_scale: the patterns carry no intensity")
    return tf.cast(dose / mean_total, tf.float32)


def expected_counts(intensities: tf.Tensor, scale: tf.Tensor | float) -> tf.Tensor:
    """Expected photon counts ``λ = s² · I`` (float32, photons per pixel)."""
    return tf.convert_to_tensor(intensities, tf.float32) * tf.cast(scale, tf.float32)


def expected_counts_at_dose(
    patches: tf.Tensor | np.ndarray, probe: tf.Tensor | np.ndarray, dose: float
) -> tf.Tensor:
    """The forward model: object patches → expected photon counts at a mean ``dose`` per pattern.

    ``λ_j = s² · |fftshift(FFT2(P · o_j)) / N|²`` with ``s²`` chosen so that the mean over the
    patterns of ``Σ_pixels λ_j`` equals ``dose`` (:func:`dose_scale`). The one spelling of
    illuminate → far_field → intensity → dose_scale → expected_counts, shared by simulation and
    by figures of a reconstruction's predicted counts.

    Args:
        patches: ``(M, N, N)`` complex64 object transmission patches (dimensionless).
        probe: ``(N, N)`` complex64 illumination (arbitrary amplitude units).
        dose: mean photons per pattern, positive and finite.

    Returns:
        ``(M, N, N)`` float32 expected counts λ, photons per pixel (a tensor; ``.numpy()`` for an
        array).
    """
    patches = tf.convert_to_tensor(patches, tf.complex64)
    probe = tf.convert_to_tensor(probe, tf.complex64)
    matching = (
        patches.shape.rank == 3
        and probe.shape.rank == 2
        and patches.shape[1:].is_compatible_with(probe.shape)
    )
    if not matching:
        raise ValueError(
            f"expected_counts_at_dose needs patches (M, N, N) and a probe (N, N), got patches "
            f"{patches.shape} and probe {probe.shape}"
        )
    pattern_intensity = intensity(far_field(illuminate(probe, patches)))
    return expected_counts(pattern_intensity, dose_scale(pattern_intensity, dose))


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
