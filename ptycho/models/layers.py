"""Thin Keras layers over :mod:`ptycho.physics`: the PINN's physics head.

Each layer validates its constructor arguments (``ValueError`` quoting the value), computes in
float32/complex64 whatever the global dtype policy is, and round-trips through ``get_config``.
Tensors are channels-last like the network: ``(B, N, N, C)`` with ``C = gridsize²``.

Learned physical quantities (the probe, the intensity scale) are tracked weights created with
``add_weight`` inside the layer: they are trained when asked, saved and loaded with the model, and
belong to exactly one model.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ptycho import physics
from ptycho.checks import check_gridsize, check_patch_size

__all__ = [
    "ComplexPatches", "DetectorResponse", "FarFieldIntensity", "IntensityScale",
    "OverlapConstraint", "ProbeIllumination"
]

_PHYSICS_DTYPE = "float32"


def _channels_first(tensor: tf.Tensor) -> tf.Tensor:
    return tf.transpose(tensor, (0, 3, 1, 2))


def _channels_last(tensor: tf.Tensor) -> tf.Tensor:
    return tf.transpose(tensor, (0, 2, 3, 1))


class _PhysicsLayer(keras.layers.Layer):
    """A layer whose dtype defaults to float32, whatever the global dtype policy is."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", _PHYSICS_DTYPE)
        super().__init__(**kwargs)


@keras.saving.register_keras_serializable(package="ptycho")
class ComplexPatches(_PhysicsLayer):
    """``(amplitude, phase)`` float32 ``(B, N, N, C)`` → complex64 patches ``a · exp(iφ)``."""

    def call(self, amplitude: tf.Tensor, phase: tf.Tensor) -> tf.Tensor:
        amplitude = tf.cast(amplitude, tf.float32)
        phase = tf.cast(phase, tf.float32)
        return tf.complex(amplitude * tf.cos(phase), amplitude * tf.sin(phase))


@keras.saving.register_keras_serializable(package="ptycho")
class OverlapConstraint(_PhysicsLayer):
    """Merge a group's ``C`` patches on one canvas and re-cut them (docs/physics.md §5, §6.3).

    The canvas is per sample (samples are never mixed): the least-squares canvas of the patches
    at their offsets from the group centre (:func:`ptycho.physics.merge_patches`: overlap-add
    then ``merge_iterations`` conjugate-gradient steps), then extraction at the same offsets.

    Args:
        N: patch side, a power of two ≥ 16.
        gridsize: g ≥ 1 (``C = g²``); with g = 1 the layer returns its input.
        canvas_size: canvas side ``M``, ≥ ``N + 2``; use :func:`ptycho.data.canvas_size`.
        merge_iterations: conjugate-gradient steps of the merge, ≥ 0 (0: normalised overlap-add,
            which smooths sub-pixel groups by about 2%).

    Call:
        patches ``(B, N, N, C)`` complex64, offsets ``(B, C, 2)`` float32 ``(x, y)`` pixels →
        ``(B, N, N, C)`` complex64.
    """

    def __init__(self, N: int, gridsize: int, canvas_size: int, merge_iterations: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.N = check_patch_size(N)
        self.gridsize = check_gridsize(gridsize)
        if isinstance(canvas_size, bool) or not isinstance(canvas_size, int | np.integer):
            raise ValueError(f"canvas_size must be an integer, got {canvas_size!r}")
        if canvas_size < self.N + 2:
            raise ValueError(f"canvas_size must be >= N + 2 = {self.N + 2}, got {canvas_size!r}")
        self.canvas_size = int(canvas_size)
        if (isinstance(merge_iterations, bool) or not isinstance(merge_iterations, int | np.integer)
                or merge_iterations < 0):
            raise ValueError(f"merge_iterations must be an integer >= 0, got {merge_iterations!r}")
        self.merge_iterations = int(merge_iterations)

    def call(self, patches: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
        if self.gridsize == 1:
            return patches
        centre = self.canvas_size / 2
        positions = tf.cast(offsets, tf.float32) + centre
        canvas = physics.merge_patches(
            _channels_first(patches), positions, (self.canvas_size, self.canvas_size),
            self.merge_iterations,
        )
        return _channels_last(physics.extract_patches(canvas, positions, self.N))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "N": self.N, "gridsize": self.gridsize,
                "canvas_size": self.canvas_size, "merge_iterations": self.merge_iterations}


@keras.saving.register_keras_serializable(package="ptycho")
class ProbeIllumination(_PhysicsLayer):
    """Exit wave ``ψ = P · o``; the probe ``P`` is a tracked weight (real and imaginary parts).

    Args:
        N: probe side, a power of two ≥ 16.
        trainable_probe: whether training refines the probe.
        probe: ``(N, N)`` complex initial probe; ``None`` (e.g. when rebuilding before loading
            weights) starts from zeros. Not part of the config: the probe lives in the weights.
        learning_rate_scale: the probe's learning rate relative to the network's (> 0): the
            weights hold ``P / scale`` and the layer multiplies them back, so each Adam step
            (a fixed size in the weights) moves the probe ``scale`` times as far.

    Call:
        object patches ``(B, N, N, C)`` complex64 → exit waves ``(B, N, N, C)`` complex64.
    """

    def __init__(self, N: int, trainable_probe: bool = False, probe: np.ndarray | None = None,
                 learning_rate_scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.N = check_patch_size(N)
        if not isinstance(trainable_probe, bool):
            raise ValueError(f"trainable_probe must be a bool, got {trainable_probe!r}")
        self.trainable_probe = trainable_probe
        if not (isinstance(learning_rate_scale, int | float) and learning_rate_scale > 0
                and math.isfinite(learning_rate_scale)):
            raise ValueError(f"learning_rate_scale must be a finite float > 0, got "
                             f"{learning_rate_scale!r}")
        self.learning_rate_scale = float(learning_rate_scale)
        if probe is not None:
            probe = np.asarray(probe)
            if probe.shape != (self.N, self.N) or not np.all(np.isfinite(probe)):
                raise ValueError(
                    f"probe must be a finite ({self.N}, {self.N}) array, got shape {probe.shape}"
                )
        initial = (np.zeros((self.N, self.N), np.complex64) if probe is None
                   else probe / self.learning_rate_scale)
        self.probe_real = self.add_weight(
            name="probe_real", shape=(self.N, self.N), trainable=trainable_probe, dtype="float32",
            initializer=keras.initializers.Constant(np.real(initial).astype(np.float32)))
        self.probe_imag = self.add_weight(
            name="probe_imag", shape=(self.N, self.N), trainable=trainable_probe, dtype="float32",
            initializer=keras.initializers.Constant(np.imag(initial).astype(np.float32)))

    def probe(self) -> tf.Tensor:
        """The current probe, ``(N, N)`` complex64."""
        probe = tf.complex(tf.convert_to_tensor(self.probe_real),
                           tf.convert_to_tensor(self.probe_imag))
        if self.learning_rate_scale == 1.0:
            return probe
        return probe * tf.constant(self.learning_rate_scale, tf.complex64)

    def call(self, obj_patches: tf.Tensor) -> tf.Tensor:
        return _channels_last(physics.illuminate(self.probe(), _channels_first(obj_patches)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "N": self.N, "trainable_probe": self.trainable_probe,
                "learning_rate_scale": self.learning_rate_scale}


@keras.saving.register_keras_serializable(package="ptycho")
class FarFieldIntensity(_PhysicsLayer):
    """``|fftshift(FFT2(ψ)) / N|²`` per channel: ``(B, N, N, C)`` complex64 → float32."""

    def call(self, exit_wave: tf.Tensor) -> tf.Tensor:
        far = physics.far_field(_channels_first(exit_wave))
        return _channels_last(physics.intensity(far))


@keras.saving.register_keras_serializable(package="ptycho")
class IntensityScale(_PhysicsLayer):
    """Expected counts ``λ = s² · I`` with a learned scale, stored as ``log s`` (so ``s > 0``).

    Args:
        log_scale: initial ``log s`` (natural log); see :func:`ptycho.models.initial_log_scale`.
        trainable: whether training refines the scale (default: yes).

    Call:
        far-field intensity ``(B, N, N, C)`` float32 → expected photons per pixel, same shape.
    """

    def __init__(self, log_scale: float = 0.0, trainable: bool = True, **kwargs: Any) -> None:
        super().__init__(trainable=trainable, **kwargs)
        if (isinstance(log_scale, bool) or not isinstance(log_scale, int | float | np.floating)
                or not math.isfinite(float(log_scale))):
            raise ValueError(f"log_scale must be a finite float, got {log_scale!r}")
        self.initial_log_scale = float(log_scale)
        self.log_scale = self.add_weight(
            name="log_scale", shape=(), trainable=True, dtype="float32",
            initializer=keras.initializers.Constant(self.initial_log_scale))

    def call(self, far_intensity: tf.Tensor) -> tf.Tensor:
        return tf.cast(far_intensity, tf.float32) * tf.exp(2.0 * self.log_scale)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "log_scale": self.initial_log_scale}


@keras.saving.register_keras_serializable(package="ptycho")
class DetectorResponse(_PhysicsLayer):
    """What the detector measures on average, ``m · (λ + b)`` (:class:`ptycho.physics.Detector`):
    the mask ``m`` a fixed (non-trainable) weight saved with the model, the background ``b``
    photons per pixel in its config. A masked pixel's expected count is then 0, constant, so it
    adds nothing to the loss or its gradient.

    Args:
        N: pattern side, a power of two ≥ 16.
        mask: ``(N, N)`` bool, ``True`` where a pixel measures; ``None`` (when rebuilding before
            loading weights): every pixel.
        background: expected background photons per measured pixel, ≥ 0.

    Call:
        expected counts ``(B, N, N, C)`` float32 → ``(B, N, N, C)`` float32.
    """

    def __init__(self, N: int, mask: np.ndarray | None = None, background: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(trainable=False, **kwargs)
        self.N = check_patch_size(N)
        detector = physics.Detector(None if mask is None else np.asarray(mask, bool), background)
        self.background = detector.background
        self.mask = self.add_weight(
            name="mask", shape=(self.N, self.N), trainable=False, dtype="float32",
            initializer=keras.initializers.Constant(detector.weights(self.N)))

    def call(self, expected: tf.Tensor) -> tf.Tensor:
        measured = tf.cast(expected, tf.float32) + np.float32(self.background)
        return measured * tf.convert_to_tensor(self.mask)[None, :, :, None]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "N": self.N, "background": self.background}
