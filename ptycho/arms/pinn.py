"""The physics-informed network (``model=pinn``): trained on the measured counts through the
forward model; its expected counts come from its own physics head."""

from __future__ import annotations

import numpy as np

from ptycho.arms.base import Arm, ArmInput, ProgressHook, Reconstruction
from ptycho.arms.network import Network, reconstruct_with_network
from ptycho.config import JobConfig
from ptycho.data import Groups, Scan
from ptycho.models import Models, build_pinn, initial_log_scale, model_inputs, pinn_targets
from ptycho.reconstruction.predict import Patches, predict


def build(job: JobConfig, train: Scan, canvas: int) -> Models:
    """A fresh PINN for ``job`` (its ``model`` settings, ``N`` and ``gridsize``), its probe and
    intensity scale set from the training ``scan``, its overlap canvas ``canvas`` pixels: the one
    place the PINN is assembled (the bench and the tests build theirs here too)."""
    settings = job.model
    return build_pinn(
        N=job.N, gridsize=job.gridsize, probe=train.probe, canvas_size=canvas,
        log_scale=initial_log_scale(train.signal_dose, train.probe),
        trainable_probe=settings.trainable_probe, bottleneck_filters=settings.bottleneck_filters,
        merge_iterations=settings.merge_iterations, activation=str(settings.activation),
        detector=train.detector,
        # read only with trainable_probe (and hashed only then): a frozen probe stays bit-exact
        probe_learning_rate_scale=(settings.probe_learning_rate_scale
                                   if settings.trainable_probe else 1.0))


def _expected(models: Models, scored: Scan, groups: Groups, patches: Patches,
              input_scale: float, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The physics head's counts for every (group, channel), as ``(G·C, N, N)``."""
    counts = predict(models.train, model_inputs(scored, groups, input_scale),
                     batch_size=batch_size)[0]  # (G, N, N, C)
    return np.moveaxis(counts, -1, 1).reshape(-1, *counts.shape[1:3]), groups.indices.ravel()


PINN = Network(build=build, targets=lambda data, groups: pinn_targets(data.training, groups),
               expected=_expected)


def reconstruct(data: ArmInput, job: JobConfig,
                on_progress: ProgressHook | None = None) -> Reconstruction:
    return reconstruct_with_network(PINN, data, job, on_progress)


ARM = Arm("pinn", reconstruct)
