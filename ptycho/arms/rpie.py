"""pty-chi's rPIE (``model=rpie``)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ptycho.arms.base import Arm, ArmInput, ProgressHook, Reconstruction
from ptycho.arms.ptychi import reconstruct_with_ptychi
from ptycho.config import JobConfig
from ptycho.config.arms.rpie import RPIESettings


def options(api: ModuleType, settings: RPIESettings) -> Any:
    chosen = api.RPIEOptions()
    chosen.object_options.alpha = settings.alpha
    chosen.object_options.step_size = settings.step_size
    chosen.probe_options.alpha = settings.alpha
    return chosen


def reconstruct(data: ArmInput, job: JobConfig,
                on_progress: ProgressHook | None = None) -> Reconstruction:
    return reconstruct_with_ptychi(options, data, job, on_progress)


ARM = Arm("rpie", reconstruct)
