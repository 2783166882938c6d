"""submitit launchers (local and SLURM) that finish a sweep even when a job's process dies.

Hydra's submitit launchers gather results with ``job.results()``, which raises for a job that
produced none (killed by the out-of-memory killer, a lost node, ``scancel``, SIGKILL): the
launching process then stops waiting for the rest of the array, no summary and no report are
made, and the dead job's run stays RUNNING. These subclasses collect every job; a job without a
result is recorded as FAILED in the sweep's summary and its RUNNING run is closed, saying why.
Selected by the presets ``hydra/launcher=local_isolated`` and ``hydra/launcher=slurm``; needs
the ``[launchers]`` extra. Hydra imports this module whenever it starts, so ptycho (and with it
TensorFlow) is imported only when a dead job has to be recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    BaseSubmititLauncher,
    LocalLauncher,
    SlurmLauncher,
)
from omegaconf import OmegaConf

__all__ = ["TolerantLocalLauncher", "TolerantSlurmLauncher"]

log = logging.getLogger(__name__)


class _Tolerant(BaseSubmititLauncher):
    """``launch`` as in the plugin, except that every job's result is collected (see module)."""

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit  # the plugin imports it lazily too (fast plugin discovery)

        assert self.config is not None
        params = dict(self.params)
        folder = params.pop("submitit_folder")
        specific = {f"{self._EXECUTOR}_max_num_timeout": params.pop("max_num_timeout")
                    } if "max_num_timeout" in params else {}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=folder, **specific)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{
            key if key in shared else f"{self._EXECUTOR}_{key}": value
            for key, value in params.items()})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        indices = [initial_job_idx + offset for offset in range(len(job_overrides))]
        for index, overrides in zip(indices, job_overrides, strict=True):
            log.info("\t#%d : %s", index, " ".join(filter_overrides(overrides)))
        state = Singleton.get_state()
        jobs = executor.map_array(
            self, [list(o) for o in job_overrides], ["hydra.sweep.dir"] * len(indices), indices,
            [f"job_id_for_{i}" for i in indices], [state] * len(indices))
        return [self._collect(job, list(overrides), index, sweep_dir)
                for job, overrides, index in zip(jobs, job_overrides, indices, strict=True)]

    @staticmethod
    def _collect(job: Any, overrides: list[str], index: int, sweep_dir: Path) -> JobReturn:
        try:
            return job.results()[0]
        except Exception as error:  # the job's process died before it could report
            reason = f"job {job.job_id} produced no result ({type(error).__name__}: {error})"
            log.error("#%d %s", index, reason)
            from ptycho.runner.sweep import job_died  # heavy (TensorFlow): only now

            job_died(sweep_dir, index, reason)
            return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=None)


class TolerantLocalLauncher(_Tolerant, LocalLauncher):
    """``submitit_local``: a fresh local process per job, all at once."""


class TolerantSlurmLauncher(_Tolerant, SlurmLauncher):
    """``submitit_slurm``: one sbatch array, one task per job."""
