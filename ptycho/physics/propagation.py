"""Illumination and far-field propagation: the optics of one diffraction pattern.

Every function is pure TensorFlow on complex64 tensors, differentiable and usable under
``tf.function(jit_compile=True)``. The same functions simulate data and form the PINN's physics
head.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["far_field", "far_field_adjoint", "illuminate", "intensity"]


def illuminate(probe: tf.Tensor, obj_patches: tf.Tensor) -> tf.Tensor:
    """Exit wave ``ψ = P · o`` of object patches under the probe.

    Args:
        probe: ``(N, N)`` complex64, the illumination (arbitrary amplitude units).
        obj_patches: ``(..., N, N)`` complex64 object transmission patches (dimensionless).

    Returns:
        ``(..., N, N)`` complex64 exit waves; the probe broadcasts over the leading axes.
    """
    probe = tf.convert_to_tensor(probe, tf.complex64)
    obj_patches = tf.convert_to_tensor(obj_patches, tf.complex64)
    return obj_patches * probe


def far_field(exit_wave: tf.Tensor) -> tf.Tensor:
    """Unitary, centred far field ``F = fftshift(FFT2(ψ)) / N``.

    Parseval holds exactly (``Σ|F|² = Σ|ψ|²``) and the zero frequency sits at pixel ``(N/2, N/2)``.

    Args:
        exit_wave: ``(..., N, N)`` complex64, square in its last two axes.

    Returns:
        ``(..., N, N)`` complex64 far-field wave (same amplitude units as ``exit_wave``).
    """
    exit_wave = tf.convert_to_tensor(exit_wave, tf.complex64)
    rows, cols = exit_wave.shape[-2], exit_wave.shape[-1]
    if rows is None or cols is None:
        raise ValueError(f"far_field needs static image sizes, got shape {exit_wave.shape}")
    if rows != cols:
        raise ValueError(f"far_field expects square images (..., N, N), got {rows}x{cols}")
    spectrum = tf.signal.fft2d(exit_wave)
    norm = tf.constant(1.0 / rows, tf.complex64)
    return tf.signal.fftshift(spectrum, axes=(-2, -1)) * norm


def far_field_adjoint(field: tf.Tensor) -> tf.Tensor:
    """Adjoint (= inverse) of :func:`far_field`: ``N · IFFT2(ifftshift(F))``, ``(..., N, N)``
    complex64."""
    field = tf.convert_to_tensor(field, tf.complex64)
    spectrum = tf.signal.ifftshift(field, axes=(-2, -1))
    return tf.signal.ifft2d(spectrum) * tf.constant(field.shape[-1], tf.complex64)


def intensity(field: tf.Tensor) -> tf.Tensor:
    """``|F|²`` as float32, same shape as ``field``."""
    field = tf.convert_to_tensor(field, tf.complex64)
    return tf.math.square(tf.math.real(field)) + tf.math.square(tf.math.imag(field))
