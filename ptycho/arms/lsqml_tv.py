"""pty-chi's LSQML with a total-variation constraint on the object (``model=lsqml_tv``)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ptycho.arms import lsqml
from ptycho.arms.base import Arm, ArmInput, ProgressHook, Reconstruction
from ptycho.arms.ptychi import reconstruct_with_ptychi
from ptycho.config import JobConfig
from ptycho.config.arms.lsqml_tv import LSQMLTVSettings


def options(api: ModuleType, settings: LSQMLTVSettings) -> Any:
    chosen = lsqml.options(api, settings)  # LSQML's choices, then the prior
    chosen.object_options.total_variation.enabled = True
    chosen.object_options.total_variation.weight = settings.tv_weight
    return chosen


def reconstruct(data: ArmInput, job: JobConfig,
                on_progress: ProgressHook | None = None) -> Reconstruction:
    return reconstruct_with_ptychi(options, data, job, on_progress)


ARM = Arm("lsqml_tv", reconstruct)
