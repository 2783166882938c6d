"""The supervised baseline (``model=baseline``, the PtychoNN recipe): the PINN's generator
trained with MAE on the true amplitude and phase patches of its training scan (its settings
declare ``supervised``); its expected counts are its patches through the forward model."""

from __future__ import annotations

import numpy as np

from ptycho import physics
from ptycho.arms.base import Arm, ArmInput, ProgressHook, Reconstruction
from ptycho.arms.network import Network, reconstruct_with_network
from ptycho.config import JobConfig
from ptycho.data import Groups, Scan
from ptycho.models import Models, baseline_targets, build_baseline
from ptycho.reconstruction.predict import Patches


def _build(job: JobConfig, train: Scan, canvas: int) -> Models:
    settings = job.model
    return build_baseline(N=job.N, gridsize=job.gridsize,
                          bottleneck_filters=settings.bottleneck_filters,
                          activation=str(settings.activation))


def _targets(data: ArmInput, groups: Groups) -> np.ndarray:
    if data.supervision is None:
        raise ValueError("the supervised baseline needs the true patches of its training scan")
    return baseline_targets(data.supervision, groups)


def _expected(models: Models, scored: Scan, groups: Groups, patches: Patches,
              input_scale: float, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """No physics head: its patches through the forward model at the measured dose, then the
    detector."""
    expected = scored.detector.expected(physics.expected_counts_at_dose(
        patches.patches, scored.probe, scored.signal_dose)).numpy()
    return expected, patches.indices


BASELINE = Network(build=_build, targets=_targets, expected=_expected)


def reconstruct(data: ArmInput, job: JobConfig,
                on_progress: ProgressHook | None = None) -> Reconstruction:
    return reconstruct_with_network(BASELINE, data, job, on_progress)


ARM = Arm("baseline", reconstruct)
