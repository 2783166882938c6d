"""Training losses (docs/physics.md §7.1). ``y_true`` first, like Keras losses; all float32.

- ``poisson_nll``: ``mean(λ − k·log(λ + ε))`` on photon counts (:mod:`ptycho.physics.likelihood`);
- ``mae``: ``mean |√λ − √k|``, the amplitude MAE arm of the dose study;
- ``supervised_mae``: the baseline's ``mean |prediction − truth|`` on amplitude and phase.

``dose_scale`` makes a loss's size, and what counts as an improvement of it, independent of the
dose: the job trains on ``scale · loss``, so ``train.min_delta`` means the same at 1e2 and 1e9.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np
import tensorflow as tf

from ptycho.physics.likelihood import poisson_nll

__all__ = ["LOSSES", "amplitude_mae", "dose_scale", "get_loss", "supervised_mae"]

_SQRT_EPS = 1e-10


def amplitude_mae(counts: tf.Tensor, expected: tf.Tensor) -> tf.Tensor:
    """``mean |√λ − √k|`` (√photons). ε keeps the gradient finite where λ = 0."""
    counts = tf.cast(counts, tf.float32)
    expected = tf.cast(expected, tf.float32)
    return tf.reduce_mean(tf.abs(tf.sqrt(expected + _SQRT_EPS) - tf.sqrt(counts)))


def supervised_mae(truth: tf.Tensor, prediction: tf.Tensor) -> tf.Tensor:
    """``mean |prediction − truth|`` over stacked amplitude and phase (radians) channels."""
    return tf.reduce_mean(tf.abs(tf.cast(prediction, tf.float32) - tf.cast(truth, tf.float32)))


LOSSES: Mapping[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = MappingProxyType(
    {"poisson_nll": poisson_nll, "mae": amplitude_mae, "supervised_mae": supervised_mae})


def dose_scale(name: str, counts: np.ndarray) -> float:
    """The factor that puts loss ``name`` in dose-independent units on these ``counts``.

    - ``poisson_nll``: ``1 / mean k`` (per pixel): the loss becomes nats per photon (up to a
      constant). A relative error ε of the predicted amplitudes raises it by about ``2ε²``
      whatever the dose, where the unscaled loss grows with the dose (by ``2ε²·mean k``).
    - ``mae``: ``1 / mean √k``: the loss becomes a relative amplitude error.
    - ``supervised_mae``: 1 (amplitude and phase do not scale with dose).

    Adam's steps do not depend on a constant factor of the loss; the schedule's ``min_delta``
    and the logged curves do.

    Args:
        name: one of :data:`LOSSES`.
        counts: the training counts, any shape, photons per pixel (≥ 0, not all 0).
    """
    get_loss(name)
    if name == "supervised_mae":
        return 1.0
    counts = np.asarray(counts, dtype=np.float64)
    mean = float(np.mean(counts if name == "poisson_nll" else np.sqrt(np.maximum(counts, 0))))
    if not (np.isfinite(mean) and mean > 0):
        raise ValueError(f"dose_scale needs counts with a positive finite mean, got {mean!r}")
    return 1.0 / mean


def get_loss(name: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The loss called ``name`` (one of :data:`LOSSES`)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}") from None
