"""The convolutional generator shared by the PINN and the supervised baseline.

Encoder: ``L = log2(N/8)`` levels of two 3×3 convolutions (leaky ReLU, slope 0.2; ``relu`` on
request) and 2×2 max pooling, down to an
8×8 bottleneck refined by two more convolutions. Two decoders (amplitude with a sigmoid, phase with
``π·tanh``) climb back with one convolution and a 2× upsampling per level, one refinement
convolution at full resolution and a 3×3 output convolution to ``C`` channels.

Why these widths (ours): the filters double at each level down to ``bottleneck_filters`` at 8×8
(for N=64: 32/64/128 then 256), and the decoders convolve *before* upsampling. That puts the
parameters where the resolution is low and keeps the full-resolution convolutions narrow: at N=64,
≈2 M parameters (the reference has 2.33 M) for ≈0.8 GFLOP per forward pass (the reference ≈1.6),
which is what makes training affordable on a CPU. Blocks are ``tensor → tensor`` functions with
stable layer names.
"""

from __future__ import annotations

import math

import keras

from ptycho.checks import check_choice, check_gridsize, check_patch_size, check_positive_int
from ptycho.config import Activation

__all__ = ["build_generator", "level_filters"]


def level_filters(N: int, bottleneck_filters: int) -> list[int]:
    """Filters of encoder levels ``0 … L−1`` (full resolution first), ``L = log2(N/8)``."""
    N = check_patch_size(N)
    bottleneck_filters = check_positive_int(bottleneck_filters, "bottleneck_filters")
    levels = int(math.log2(N // 8))
    return [max(1, bottleneck_filters >> (levels - i)) for i in range(levels)]


def _conv(x: keras.KerasTensor, filters: int, name: str, activation: str):
    return keras.layers.Conv2D(filters, 3, padding="same", activation=activation, name=name)(x)


def _decoder(bottleneck: keras.KerasTensor, filters: list[int], channels: int, head: str,
             activation: str) -> keras.KerasTensor:
    x = bottleneck
    for level in reversed(range(len(filters))):
        x = _conv(x, filters[level], f"{head}_level{level}_conv", activation)
        x = keras.layers.UpSampling2D(2, name=f"{head}_level{level}_up")(x)
    x = _conv(x, filters[0], f"{head}_refine", activation)
    return _conv(x, channels, f"{head}_out", "linear")


def build_generator(*, N: int, gridsize: int, bottleneck_filters: int, activation: str,
                    name: str = "generator") -> keras.Model:
    """A fresh generator: diffraction ``(B, N, N, C)`` float32 → ``[amplitude, phase]``.

    Args:
        N: patch side, a power of two ≥ 16.
        gridsize: g ≥ 1; ``C = g²`` input and output channels.
        bottleneck_filters: filters at the 8×8 bottleneck (halved at each level up).
        activation: hidden activation, ``leaky_relu`` or ``relu``
            (:class:`~ptycho.config.Activation`).

    Returns:
        A ``keras.Model`` with input ``diffraction`` (normalised amplitudes) and outputs amplitude
        in ``(0, 1)`` and phase in ``(−π, π)`` radians, both ``(B, N, N, C)``.
    """
    N = check_patch_size(N)
    channels = check_gridsize(gridsize) ** 2
    filters = level_filters(N, bottleneck_filters)
    activation = check_choice(activation, Activation, "activation")
    diffraction = keras.Input((N, N, channels), name="diffraction")
    x = diffraction
    for level, width in enumerate(filters):
        x = _conv(x, width, f"encoder_level{level}_conv1", activation)
        x = _conv(x, width, f"encoder_level{level}_conv2", activation)
        x = keras.layers.MaxPooling2D(2, name=f"encoder_level{level}_pool")(x)
    x = _conv(x, bottleneck_filters, "bottleneck_conv1", activation)
    x = _conv(x, bottleneck_filters, "bottleneck_conv2", activation)
    amplitude = keras.layers.Activation("sigmoid", name="amplitude", dtype="float32")(
        _decoder(x, filters, channels, "amplitude_decoder", activation)
    )
    phase_logits = _decoder(x, filters, channels, "phase_decoder", activation)
    phase = keras.layers.Activation(_pi_tanh, name="phase", dtype="float32")(phase_logits)
    return keras.Model(diffraction, [amplitude, phase], name=name)


@keras.saving.register_keras_serializable(package="ptycho")
def _pi_tanh(x):
    return math.pi * keras.ops.tanh(x)
