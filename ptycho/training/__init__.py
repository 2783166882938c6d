"""Losses and the training loop (XLA, schedule, early stopping, divergence guard, timings)."""

from ptycho.training.fit import FitResult, TrainingDiverged, fit
from ptycho.training.losses import LOSSES, amplitude_mae, dose_scale, get_loss, supervised_mae

__all__ = ["LOSSES", "FitResult", "TrainingDiverged", "amplitude_mae", "dose_scale", "fit",
           "get_loss", "supervised_mae"]
