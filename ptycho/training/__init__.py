"""Losses and the training loop (XLA, schedule, early stopping, divergence guard, timings)."""

from ptycho.training.fit import FitResult, TrainingDiverged, fit, predict
from ptycho.training.losses import (
    LOSSES,
    amplitude_mae,
    dose_scale,
    get_loss,
    poisson_nll,
    poisson_nll_per_photon,
    supervised_mae,
)
from ptycho.training.reconstruct import Reconstruction, reconstruct

__all__ = [
    "LOSSES",
    "FitResult",
    "Reconstruction",
    "TrainingDiverged",
    "amplitude_mae",
    "dose_scale",
    "fit",
    "get_loss",
    "poisson_nll",
    "poisson_nll_per_photon",
    "predict",
    "reconstruct",
    "supervised_mae",
]
