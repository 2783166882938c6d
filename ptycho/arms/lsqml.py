"""pty-chi's LSQML with a Poisson noise model (``model=lsqml``)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ptycho.arms.base import Arm, ArmInput, ProgressHook, Reconstruction
from ptycho.arms.ptychi import reconstruct_with_ptychi
from ptycho.config import JobConfig
from ptycho.config.arms.lsqml import LSQMLSettings


def options(api: ModuleType, settings: LSQMLSettings) -> Any:
    chosen = api.LSQMLOptions()
    chosen.reconstructor_options.noise_model = api.NoiseModels.POISSON  # pty-chi's default is
    # Gaussian. The probe's photon scale is known (ptychi.flat_field_scale): keep it.
    chosen.reconstructor_options.rescale_probe_intensity_in_first_epoch = False
    chosen.object_options.optimal_step_size_scaler = 0.9 * settings.step_size
    return chosen


def reconstruct(data: ArmInput, job: JobConfig,
                on_progress: ProgressHook | None = None) -> Reconstruction:
    return reconstruct_with_ptychi(options, data, job, on_progress)


ARM = Arm("lsqml", reconstruct)
