"""A trained network over a scan: its patches, each with its position and its pattern.

``predict`` runs a Keras model with one static batch shape (the last batch padded, so a compiled
step is traced once); :func:`predict_patches` turns a network's amplitude and phase into object
patches laid out for :mod:`~ptycho.reconstruction.synchronise` and
:mod:`~ptycho.reconstruction.stitch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from ptycho.checks import check_positive_int
from ptycho.data import Groups, Scan
from ptycho.models import Models, model_inputs

__all__ = ["Patches", "predict", "predict_patches"]


def predict(
    model: keras.Model,
    inputs: dict[str, np.ndarray],
    *,
    batch_size: int,
    jit_compile: bool | None = None,
) -> list[np.ndarray]:
    """Run ``model`` over every row of ``inputs`` with one static batch shape.

    The last batch is padded (and the padding dropped), so a compiled predict step is traced once.
    ``jit_compile`` (re)compiles the model for inference; ``None`` keeps its current setting.

    Returns:
        The model's outputs as a list of ``(G, ...)`` arrays.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    if jit_compile is not None:
        model.compile(jit_compile=bool(jit_compile))
    names = [tensor.name for tensor in model.inputs]
    arrays = {name: inputs[name] for name in names}
    total = len(next(iter(arrays.values())))
    batch_size = min(batch_size, total)
    padded_total = -(-total // batch_size) * batch_size
    padded = {
        name: np.concatenate([a, np.repeat(a[-1:], padded_total - total, axis=0)])
        if padded_total > total
        else a
        for name, a in arrays.items()
    }
    # A single-input model takes the bare array (a one-key dict makes Keras warn).
    elements = padded[names[0]] if len(names) == 1 else padded
    dataset = tf.data.Dataset.from_tensor_slices(elements).batch(batch_size, drop_remainder=True)
    outputs = model.predict(dataset, verbose=0)
    if not isinstance(outputs, list | tuple):
        outputs = [outputs]
    return [np.asarray(output)[:total] for output in outputs]


@dataclass(frozen=True)
class Patches:
    """Every predicted patch with its position, one row per (group, channel).

    Attributes:
        patches: ``(G·C, N, N)`` complex64 object patches ``a·exp(iφ)``.
        positions: ``(G·C, 2)`` float64 ``(x, y)`` pixels on the object grid.
        indices: ``(G·C,)`` int64 index of each patch's diffraction pattern in the scan.
    """

    patches: np.ndarray
    positions: np.ndarray
    indices: np.ndarray


def predict_patches(models: Models, scan: Scan, groups: Groups, input_scale: float, *,
                    batch_size: int) -> Patches:
    """Predict amplitude and phase for every group of ``scan`` with ``models.inference``."""
    inputs = model_inputs(scan, groups, input_scale)
    amplitude, phase = predict(models.inference, inputs, batch_size=batch_size)
    patches = (amplitude * np.exp(1j * phase)).astype(np.complex64)  # (G, N, N, C)
    flat = np.moveaxis(patches, -1, 1).reshape(-1, *patches.shape[1:3])
    indices = groups.indices.reshape(-1)
    return Patches(patches=flat, positions=scan.positions[indices], indices=indices)
