"""A job's MLflow run from creation to its one close: the tracked-run context manager.

``prior_run`` decides, before any work, whether a job needs a run at all (a FINISHED run of the
same ``config_hash`` to reuse, one RUNNING in a live process elsewhere, stale ones to close).
``TrackedRun`` creates the run, keeps its heartbeat while the block runs and closes it exactly
once: FINISHED when the block ends normally, FAILED when it raises an ``Exception`` (the error as
tags, the traceback as an artifact; the exception is suppressed, the job's failure is data), or
KILLED on ``KeyboardInterrupt``/``SystemExit`` (recorded, then re-raised).
"""

from __future__ import annotations

import logging
import tempfile
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ptycho.runner.tracking.liveness import Heartbeat, close_stale_runs
from ptycho.runner.tracking.store import RunRecord, Tracker

__all__ = ["PriorRun", "TrackedRun", "prior_run", "record_failure"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PriorRun:
    """What the store already holds for a config: ``finished`` (reuse it, with ``resume``) or
    ``running`` (alive in another process); both ``None`` when the job should run."""

    finished: RunRecord | None = None
    running: RunRecord | None = None


def prior_run(tracker: Tracker, experiment_id: str, config_hash: str, *, resume: bool,
              stale_after_s: float, same_sweep: str | None = None) -> PriorRun:
    """Close this config's stale RUNNING runs (FAILED, ``status_reason=stale``), whatever
    ``resume`` says; with ``resume``, report a FINISHED run to reuse or a live RUNNING one.
    Without ``resume`` but with ``same_sweep`` (a parent run id), still report a FINISHED run
    (or a live RUNNING one) of this sweep: a job the sweep has already run (an iterative arm
    swept over settings it does not use) is not run twice."""
    alive = close_stale_runs(tracker, experiment_id, f"tags.config_hash = '{config_hash}'",
                             stale_after_s, "its job is run again")
    if not resume:
        if same_sweep is not None:
            finished = tracker.find_finished(experiment_id, config_hash, parent_run_id=same_sweep)
            running = [run for run in alive if run.tags.get("mlflow.parentRunId") == same_sweep]
            return PriorRun(finished=finished,
                            running=running[0] if running and finished is None else None)
        return PriorRun()
    finished = tracker.find_finished(experiment_id, config_hash)
    if finished is not None:
        return PriorRun(finished=finished)
    return PriorRun(running=alive[0] if alive else None)


def record_failure(tracker: Tracker, run_id: str, status: str, message: str,
                   trace: str) -> None:
    """Store ``trace`` as ``traceback.txt`` and close the run as ``status`` (FAILED or KILLED)
    with ``message``; never raises (recording must not hide the original failure)."""
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "traceback.txt"
            path.write_text(trace)
            tracker.log_artifact(run_id, path)
    except Exception as error:
        log.warning("could not store the traceback of run %s (%s: %s)", run_id,
                    type(error).__name__, error)
    try:
        tracker.close_run(run_id, status, status.lower(), message)
    except Exception:
        log.exception("could not close run %s as %s", run_id, status)


def _start_system_metrics(tracker: Tracker, run_id: str, interval_s: float) -> Any:
    """MLflow's system-metrics monitor on ``run_id`` (CPU, memory, disk, network; GPU where
    ``pynvml`` finds one), sampling every ``interval_s`` seconds in a thread; ``None`` (with a
    warning) where it cannot start. MLflow's own monitor, attached to an explicit run id,
    because the job's runs are not the fluent API's active run."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s,
                                       samples_before_logging=1, tracking_uri=tracker.uri)
        monitor.start()
        return monitor
    except Exception as error:  # e.g. psutil missing: the job runs without them
        log.warning("no system metrics for run %s: %s", run_id, error)
        return None


class TrackedRun:
    """A run that is open while the ``with`` block runs and closed exactly once after it.

    Attributes (after the block): ``status`` (FINISHED, FAILED or KILLED) and ``error`` (the
    message of a FAILED or KILLED run). A run that another process closed meanwhile (judged
    stale after its heartbeat was lost) ends FAILED, its results kept, with a tag that says so.
    """

    def __init__(self, tracker: Tracker, experiment_id: str, name: str, *,
                 parent_run_id: str | None = None, tags: Mapping[str, str] | None = None,
                 heartbeat_s: float = 60.0, system_metrics_s: float = 0.0) -> None:
        self.tracker = tracker
        self.experiment_id = experiment_id
        self.name = name
        self.parent_run_id = parent_run_id
        self.tags = dict(tags or {})
        self.heartbeat_s = heartbeat_s
        self.run_id: str | None = None
        self.status = "RUNNING"
        self.error: str | None = None
        self._heartbeat: Heartbeat | None = None
        self.system_metrics_s = system_metrics_s
        self._monitor: Any = None

    def __enter__(self) -> TrackedRun:
        self.run_id = self.tracker.create_run(self.experiment_id, self.name,
                                              parent_run_id=self.parent_run_id, tags=self.tags)
        self._heartbeat = Heartbeat(self.tracker, self.run_id, self.heartbeat_s).start()
        if self.system_metrics_s > 0:
            self._monitor = _start_system_metrics(self.tracker, self.run_id,
                                                  self.system_metrics_s)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> bool:
        assert self.run_id is not None
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._monitor is not None:
            try:
                self._monitor.finish()
            except Exception as failure:  # secondary: never changes how the run ends
                log.warning("system metrics of run %s: %s", self.run_id, failure)
        if error is None:
            self._finish()
            return False
        text = "".join(traceback.format_exception(kind, error, trace))
        if isinstance(error, KeyboardInterrupt | SystemExit):
            if isinstance(error, KeyboardInterrupt):
                reason = str(error) or "interrupted by SIGINT"
            else:  # e.g. submitit's exit to requeue a preempted SLURM job
                reason = f"process exit requested (code {error.code})"
            self.status, self.error = "KILLED", reason
            record_failure(self.tracker, self.run_id, "KILLED", reason, text)
            return False  # re-raised: the process is being stopped
        if not isinstance(error, Exception):
            return False
        self.status, self.error = "FAILED", f"{type(error).__name__}: {error}"
        record_failure(self.tracker, self.run_id, "FAILED", self.error, text)
        return True  # the job failed; the sweep goes on

    def _finish(self) -> None:
        assert self.run_id is not None
        try:
            closed = self.tracker.get_run(self.run_id).status
            if closed != "RUNNING":  # judged stale meanwhile (heartbeat lost), closed elsewhere
                message = (f"finished after being closed as {closed} by another sweep (its "
                           "heartbeat was lost); the results are logged, but the job may have "
                           "been rerun")
                self.tracker.set_tags(self.run_id, {"error": message})
                self.status, self.error = "FAILED", message
                return
            self.tracker.end_run(self.run_id, "FINISHED")
            self.status = "FINISHED"
        except Exception as error:  # the store went away at the very end: say so, not raise
            self.status = "FAILED"
            self.error = f"could not close the run as FINISHED ({type(error).__name__}: {error})"
            log.error("run %s: %s", self.run_id, self.error)
