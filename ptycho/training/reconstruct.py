"""Run a trained model over a dataset and lay its patches out for stitching."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptycho.config import EvalConfig
from ptycho.data import DiffractionData, Groups
from ptycho.models import Models, model_inputs
from ptycho.training.fit import predict

__all__ = ["Reconstruction", "reconstruct"]


@dataclass(frozen=True)
class Reconstruction:
    """Every predicted patch with its position, one row per (group, channel).

    Attributes:
        patches: ``(G·C, N, N)`` complex64 object patches ``a·exp(iφ)``.
        positions: ``(G·C, 2)`` float64 ``(x, y)`` pixels on the object grid.
        indices: ``(G·C,)`` int64 index of each patch's diffraction pattern in the dataset.
    """

    patches: np.ndarray
    positions: np.ndarray
    indices: np.ndarray


def reconstruct(
    models: Models,
    data: DiffractionData,
    groups: Groups,
    input_scale: float,
    *,
    batch_size: int = EvalConfig.batch_size,
) -> Reconstruction:
    """Predict amplitude and phase for every group of ``data`` with ``models.inference``."""
    inputs = model_inputs(data, groups, input_scale)
    amplitude, phase = predict(models.inference, inputs, batch_size=batch_size)
    patches = (amplitude * np.exp(1j * phase)).astype(np.complex64)  # (G, N, N, C)
    flat = np.moveaxis(patches, -1, 1).reshape(-1, *patches.shape[1:3])
    indices = groups.indices.reshape(-1)
    return Reconstruction(patches=flat, positions=data.positions[indices], indices=indices)
