"""Training losses (docs/physics.md §7.1). ``y_true`` first, like Keras losses; all float32.

- ``poisson_nll``: ``mean(λ − k·log(λ + ε))`` on photon counts (the constant ``log k!`` dropped);
- ``mae``: ``mean |√λ − √k|``, the amplitude MAE arm of the dose study;
- ``supervised_mae``: the baseline's ``mean |prediction − truth|`` on amplitude and phase.

``poisson_nll_per_photon`` is the full NLL (with ``log k!``) divided by the photon count, which
compares across doses.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

__all__ = [
    "LOSSES",
    "amplitude_mae",
    "get_loss",
    "poisson_nll",
    "poisson_nll_per_photon",
    "supervised_mae",
]

_LOG_EPS = 1e-6
_SQRT_EPS = 1e-10


def poisson_nll(counts: tf.Tensor, expected: tf.Tensor) -> tf.Tensor:
    """``mean(λ − k·log(λ + ε))``; counts and expected ``(B, N, N, C)`` photons per pixel."""
    counts = tf.cast(counts, tf.float32)
    expected = tf.cast(expected, tf.float32)
    return tf.reduce_mean(expected - counts * tf.math.log(expected + _LOG_EPS))


def amplitude_mae(counts: tf.Tensor, expected: tf.Tensor) -> tf.Tensor:
    """``mean |√λ − √k|`` (√photons). ε keeps the gradient finite where λ = 0."""
    counts = tf.cast(counts, tf.float32)
    expected = tf.cast(expected, tf.float32)
    return tf.reduce_mean(tf.abs(tf.sqrt(expected + _SQRT_EPS) - tf.sqrt(counts)))


def supervised_mae(truth: tf.Tensor, prediction: tf.Tensor) -> tf.Tensor:
    """``mean |prediction − truth|`` over stacked amplitude and phase (radians) channels."""
    return tf.reduce_mean(tf.abs(tf.cast(prediction, tf.float32) - tf.cast(truth, tf.float32)))


def poisson_nll_per_photon(counts: tf.Tensor, expected: tf.Tensor) -> tf.Tensor:
    """Full NLL ``Σ(λ − k log λ + log k!) / Σk`` (nats per photon)."""
    counts = tf.cast(counts, tf.float64)
    expected = tf.cast(expected, tf.float64)
    nll = expected - counts * tf.math.log(expected + _LOG_EPS) + tf.math.lgamma(counts + 1.0)
    return tf.reduce_sum(nll) / tf.maximum(tf.reduce_sum(counts), 1.0)


LOSSES: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    "poisson_nll": poisson_nll,
    "mae": amplitude_mae,
    "supervised_mae": supervised_mae,
}


def get_loss(name: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The loss called ``name`` (one of :data:`LOSSES`)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}") from None
