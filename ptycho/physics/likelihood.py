"""The Poisson likelihood of measured counts, in every form the project uses (docs/physics.md
§7.1, §8.1, §11): the training loss, the full NLL per photon, the NLL with the photon scale
profiled out, and the Fisher information of a scan under :class:`~.operator.Ptychography`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from ptycho.physics.operator import Ptychography

__all__ = ["poisson_fisher", "poisson_nll", "poisson_nll_per_photon",
           "profiled_poisson_nll_per_photon"]

_LOG_EPS = 1e-6


def poisson_nll(counts: tf.Tensor, expected: tf.Tensor) -> tf.Tensor:
    """``mean(λ − k·log(λ + ε))`` (``log k!`` dropped), float32: the training loss; counts and
    expected of one shape, photons per pixel."""
    counts = tf.cast(counts, tf.float32)
    expected = tf.cast(expected, tf.float32)
    return tf.reduce_mean(expected - counts * tf.math.log(expected + _LOG_EPS))


def poisson_nll_per_photon(counts: tf.Tensor, expected: tf.Tensor) -> tf.Tensor:
    """Full NLL ``Σ(λ − k log λ + log k!) / Σk`` (nats per photon, float64): comparable across
    doses and arms."""
    counts = tf.cast(counts, tf.float64)
    expected = tf.cast(expected, tf.float64)
    nll = expected - counts * tf.math.log(expected + _LOG_EPS) + tf.math.lgamma(counts + 1.0)
    return tf.reduce_sum(nll) / tf.maximum(tf.reduce_sum(counts), 1.0)


def profiled_poisson_nll_per_photon(counts: tf.Tensor, intensities: tf.Tensor) -> tf.Tensor:
    """``min_s² Σ(s² I − n log(s² I)) / Σn`` (``log n!`` dropped), float64: the NLL of counts
    ``n`` whose expected values are ``s² I`` for an unknown photon scale, at its best value
    ``s² = Σn / ΣI``, i.e. ``(Σn − Σn log(Σn/ΣI) − Σ n log I) / Σn``. A reconstruction's
    amplitude scale then does not matter. The terms are formed in the intensities' own
    precision (float32 is half the time of float64 in the phase synchronisation's loop), and
    every sum is taken in float64."""
    intensities = tf.convert_to_tensor(intensities)
    counts = tf.cast(counts, intensities.dtype)
    total = tf.reduce_sum(tf.cast(counts, tf.float64))
    light = tf.reduce_sum(tf.cast(intensities, tf.float64))
    log_light = tf.reduce_sum(tf.cast(counts * tf.math.log(intensities + 1e-30), tf.float64))
    return (total - total * tf.math.log(total / light) - log_light) / total


def poisson_fisher(operator: Ptychography, obj: np.ndarray, free: np.ndarray,
                   weights: np.ndarray | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The Fisher information of Poisson counts ``λ = s² |A o|²`` at ``s² = 1``, as a function
    on the object's free pixels.

    ``∂λ/√λ = 2 s Re(conj(u) · A δ)`` with ``u`` the unit phasor of the true far field, so
    ``I δ = 4 s² Aᴴ(u ⊙ Re(conj(u) ⊙ A δ))`` (no division by λ: dark pixels are harmless),
    linear in ``s²``. A real parameter vector ``(Re δ, Im δ)`` is carried as one complex vector
    of the free pixels (row-major order of ``free``); the returned function maps ``δ`` (``(n,)``
    or a batch ``(B, n)``) to ``I δ`` in the same form, so ``Re(vdot(a, b))`` is the Euclidean
    inner product of the real parameters.

    Args:
        operator: the scan's operator.
        obj: ``(H, W)`` complex true object.
        free: ``(H, W)`` bool parameter pixels.
        weights: the detector's share of each pixel's information, ``(N, N)`` or ``(M, N, N)``
            float in ``[0, 1]``: 0 where it does not measure, ``λ/(λ + b)`` under a background
            of ``b`` photons (``(∂λ)²/(λ + b)`` in place of ``(∂λ)²/λ``), which makes the
            information depend on the dose; ``None``: 1 everywhere (an ideal detector).
    """
    true_field = operator.far_field(np.asarray(obj, np.complex64))
    magnitude = tf.abs(true_field)
    # 0 where the field vanishes: those pixels carry no information on a perturbation's phase
    phasor = tf.where(magnitude > 0, true_field / tf.cast(tf.maximum(magnitude, 1e-30),
                                                           tf.complex64), tf.zeros_like(true_field))
    # u·w on the way back only: Aᴴ(u w Re(conj(u) Aδ)) stays symmetric in δ
    weighted = phasor if weights is None else phasor * tf.cast(
        tf.constant(np.asarray(weights, np.float32)), tf.complex64)
    forward, adjoint = operator.linear()
    free_index = np.flatnonzero(np.asarray(free).ravel())
    size = int(np.prod(operator.object_shape))

    @tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
    def apply(delta: tf.Tensor) -> tf.Tensor:
        """``(B, n)`` complex64 perturbations → ``(B, n)`` information times them."""
        batch = tf.shape(delta)[0]
        image = tf.transpose(tf.scatter_nd(free_index[:, None], tf.transpose(delta),
                                           [size, batch]))  # (B, H·W)
        whitened = tf.math.real(tf.math.conj(phasor) * forward(image))  # ∂λ/(2 s √λ)
        placed = adjoint(weighted * tf.cast(whitened, tf.complex64))
        return 4.0 * tf.gather(placed, free_index, axis=1)

    def fisher(delta: np.ndarray) -> np.ndarray:
        delta = np.asarray(delta)
        out = apply(tf.constant(np.atleast_2d(delta).astype(np.complex64)))
        out = out.numpy().astype(np.complex128)
        return out[0] if delta.ndim == 1 else out

    return fisher
