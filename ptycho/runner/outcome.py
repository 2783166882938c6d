"""What a job is told (:class:`JobContext`) and what it reports (:class:`JobOutcome`): plain
values, passed between the launcher, the job, its child process and the sweep's summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ptycho.config import NAMING_AXES

__all__ = ["JobContext", "JobOutcome"]


@dataclass(frozen=True)
class JobContext:
    """What the launcher knows about this job, as plain values.

    Attributes:
        project_root: the repository root (default store and cache live under its ``outputs/``).
        output_dir: this job's own folder (logs, config).
        job_index, job_total: position in the sweep (0-based index) for progress lines.
        parent_run_id, experiment_id: the sweep's parent run (``None`` for a single run).
        overrides: the command-line overrides that made this job.
        swept: the keys the sweep varies; those that are not naming axes (``train.epochs``)
            join the run name, so every run of a sweep is told apart.
        sweep: whether the job is part of a multirun.
        in_launcher: whether the job runs in the process that launched the sweep (the basic
            launcher; a single run). Elsewhere (a parallel launcher's worker) a termination
            signal ends the job but not the process.
    """

    project_root: Path
    output_dir: Path
    job_index: int = 0
    job_total: int = 1
    parent_run_id: str | None = None
    experiment_id: str | None = None
    overrides: tuple[str, ...] = ()
    swept: tuple[str, ...] = ()
    sweep: bool = False
    in_launcher: bool = True

    @property
    def prefix(self) -> str:
        """``[3/12]``: the job's place in its sweep, for progress lines."""
        return f"[{self.job_index + 1}/{self.job_total}]"

    def name_extras(self) -> dict[str, str]:
        """Swept settings of this job that the run name's axes do not show, by key."""
        pairs = (override.lstrip("+~").partition("=") for override in self.overrides)
        return {key: value for key, _, value in pairs
                if key in self.swept and key not in NAMING_AXES}


@dataclass
class JobOutcome:
    """How a job ended. ``status``: FINISHED, FAILED, KILLED, SKIPPED, ELSEWHERE (its config is
    RUNNING in a live process elsewhere), DRY_RUN or INVALID."""

    name: str
    status: str
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    config_hash: str | None = None
    note: str | None = None
    """Why a SKIPPED job was not run when that is not a resume (a duplicate in the sweep), or
    that a FINISHED one is degenerate."""

    @property
    def ok(self) -> bool:
        return self.status in ("FINISHED", "SKIPPED", "DRY_RUN")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
