"""Hydra glue: the job context, the sweep's parent run, the end-of-sweep summary.

The only module (besides ``run.py``) that touches Hydra. A multirun gets one parent MLflow run,
created once in the launching process before any job starts (``on_multirun_start``) and written
to ``<sweep dir>/.ptycho/parent.json``, where every job (in this process or another) reads it.
Each job appends its outcome to ``<sweep dir>/.ptycho/jobs.jsonl``; ``on_multirun_end`` prints the
summary table, closes the parent and exits non-zero when a job failed. If a sweep dies before
that, an ``atexit`` handler still closes the parent: KILLED after a termination signal or a
KILLED job, else FAILED. A SIGTERM/SIGINT to the launching process is first passed on to its job
processes (parallel launchers), which close their runs as KILLED.

Sweep parents left RUNNING by a sweep killed outright are marked FAILED (stale) when the next
sweep of the experiment starts; stale children are handled by each job (``ptycho.job``).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ptycho import runtime
from ptycho.job import HEADLINE_METRICS, JobContext, JobOutcome, tracker_for
from ptycho.tracking import (
    ROLE_TAG,
    Heartbeat,
    Tracker,
    close_stale_runs,
    git_state,
    host_tags,
)

__all__ = [
    "SweepCallback",
    "expand_sweep",
    "job_context",
    "job_died",
    "job_in_flight",
    "read_parent",
    "record_outcome",
    "summary_table",
    "sweep_stopping",
]

log = logging.getLogger(__name__)

STATE_DIR = ".ptycho"


def _state(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / STATE_DIR


def project_root_of(config: DictConfig) -> Path:
    """The folder holding ``conf/`` (the project root), from Hydra's config sources."""
    for source in config.hydra.runtime.config_sources:
        if source.provider == "main" and str(source.path).startswith("file://"):
            return Path(str(source.path).removeprefix("file://")).resolve().parent
    return Path.cwd()


def expand_sweep(config: DictConfig) -> list[list[str]]:
    """The job override lists the basic sweeper will produce (config params, then the command
    line, which wins), for counting jobs before they run."""
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.params or {}).items()]
    arguments = list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(params + arguments)
    # The basic sweeper's own expansion (a static method), so the count is the one it will run.
    return BasicSweeper.split_arguments(overrides, None)[0]


def job_context(project_root: Path) -> JobContext:
    """What Hydra knows about the running job, as a :class:`JobContext`."""
    hydra = HydraConfig.get()
    output_dir = Path(hydra.runtime.output_dir)
    overrides = tuple(hydra.overrides.task)
    if hydra.mode != RunMode.MULTIRUN:
        return JobContext(project_root=project_root, output_dir=output_dir, overrides=overrides)
    parent = read_parent(hydra.sweep.dir)
    return JobContext(
        project_root=project_root,
        output_dir=output_dir,
        job_index=int(hydra.job.num),
        job_total=int(parent.get("job_total", 0)) or int(hydra.job.num) + 1,
        parent_run_id=parent.get("parent_run_id"),
        experiment_id=parent.get("experiment_id"),
        overrides=overrides,
        sweep=True,
        in_launcher=parent.get("launcher_pid") == os.getpid(),
    )


def _multirun_state() -> Path | None:
    hydra = HydraConfig.get()
    return _state(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else None


def sweep_stopping() -> bool:
    """Whether the sweep's launcher got a termination signal (no further job may start)."""
    state = _multirun_state()
    return state is not None and (state / "stopping").exists()


@contextmanager
def job_in_flight(job_index: int) -> Iterator[None]:
    """Marks a multirun job as in flight (``.ptycho/running/<index>``) while the block runs, so a
    stopping launcher knows when its jobs have closed their runs."""
    state = _multirun_state()
    marker = None if state is None else state / "running" / str(job_index)
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()))
    try:
        yield
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)


def record_outcome(outcome: JobOutcome, job_index: int) -> None:
    """Append a multirun job's outcome to the sweep's ``jobs.jsonl`` (no-op for single runs)."""
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return
    folder = _state(hydra.sweep.dir)
    folder.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"job_index": job_index, **outcome.to_dict()})
    with (folder / "jobs.jsonl").open("a") as handle:
        handle.write(line + "\n")


def read_parent(sweep_dir: str | Path) -> dict[str, Any]:
    """What ``on_multirun_start`` wrote to ``.ptycho/parent.json``: ``job_total``, ``sweep_dir``,
    ``launcher_pid`` and, unless a dry run, ``parent_run_id``, ``experiment_id`` and
    ``tracking_uri``. ``{}`` when it is missing or unreadable."""
    try:
        return json.loads((_state(sweep_dir) / "parent.json").read_text())
    except (OSError, ValueError):
        return {}


def job_died(sweep_dir: str | Path, job_index: int, reason: str) -> None:
    """A launcher saw job ``job_index``'s process die without a result: record it FAILED in the
    sweep's summary and close the RUNNING run it left (if it got that far), saying why."""
    state = _state(sweep_dir)
    parent = read_parent(sweep_dir)
    outcome = {"job_index": job_index, "name": f"job {job_index + 1}", "status": "FAILED",
               "metrics": {}, "error": reason}
    if parent.get("parent_run_id") and parent.get("tracking_uri"):
        try:
            tracker = Tracker(parent["tracking_uri"])
            for run in tracker.children(parent["experiment_id"], parent["parent_run_id"]):
                if run.status != "RUNNING" or run.tags.get("job_index") != str(job_index):
                    continue
                tracker.close_run(run.run_id, "FAILED", "died", reason)
                outcome.update(name=run.name, run_id=run.run_id,
                               config_hash=run.tags.get("config_hash"))
        except Exception:
            log.exception("could not close the run of dead job %d", job_index)
    try:
        with (state / "jobs.jsonl").open("a") as handle:
            handle.write(json.dumps(outcome) + "\n")
    except OSError as error:
        log.error("could not record dead job %d: %s", job_index, error)


def read_outcomes(sweep_dir: str | Path, job_total: int | None = None) -> list[dict[str, Any]]:
    """The recorded outcome of every job, by index: the last one when a job was requeued;
    unreadable lines are skipped. With ``job_total``, a job that recorded nothing (its process
    died) is listed as FAILED."""
    path = _state(sweep_dir) / "jobs.jsonl"
    latest: dict[int, dict[str, Any]] = {}
    try:
        lines = path.read_text().splitlines() if path.is_file() else []
    except OSError as error:
        log.error("could not read %s: %s", path, error)
        lines = []
    for line in lines:
        try:
            outcome = json.loads(line)
            latest[int(outcome["job_index"])] = outcome
        except (ValueError, KeyError, TypeError):
            if line.strip():
                log.warning("skipping an unreadable line of %s: %.80s", path, line)
    for index in range(job_total or 0):
        latest.setdefault(index, {
            "job_index": index, "name": f"job {index + 1}", "status": "FAILED", "metrics": {},
            "error": "no outcome recorded: its process died or it never started"})
    return [latest[index] for index in sorted(latest)]


def summary_table(outcomes: list[dict[str, Any]]) -> str:
    """A fixed-width table: job, status, headline metrics, and the error of failed jobs."""
    header = f"{'#':>3}  {'job':<42} {'status':<9}" + "".join(f" {k:>11}" for k in
                                                                  HEADLINE_METRICS)
    lines = [header, "-" * len(header)]
    for outcome in outcomes:
        values = "".join(
            f" {outcome['metrics'][k]:>11.4g}" if k in outcome.get("metrics", {}) else
            f" {'-':>11}" for k in HEADLINE_METRICS
        )
        lines.append(f"{outcome['job_index'] + 1:>3}  {outcome['name']:<42} "
                     f"{outcome['status']:<9}{values}")
        if outcome.get("error"):
            lines.append(f"{'':>5}-> {outcome['error'][:300]}")
    return "\n".join(lines)


class SweepCallback(Callback):
    """Creates the parent run before jobs and closes it, with a summary, after them."""

    def __init__(self) -> None:
        self._parent: dict[str, Any] | None = None
        self._closed = False
        self._heartbeat: Heartbeat | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Parallel launchers pickle the callbacks into every job process. The parent run's
        # tracker, heartbeat and closing duty stay with the launching process.
        return {"_parent": None, "_closed": True, "_heartbeat": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        state = _state(sweep_dir)
        state.mkdir(parents=True, exist_ok=True)
        for leftover in ("jobs.jsonl", "stopping"):
            (state / leftover).unlink(missing_ok=True)
        shutil.rmtree(state / "running", ignore_errors=True)
        jobs = expand_sweep(config)
        info: dict[str, Any] = {"job_total": len(jobs), "sweep_dir": str(sweep_dir),
                                "launcher_pid": os.getpid()}
        print(f"sweep: {len(jobs)} jobs -> {sweep_dir}", flush=True)
        if config.dry_run:
            (state / "parent.json").write_text(json.dumps(info))
            return
        root = project_root_of(config)
        tracking = OmegaConf.to_container(config.tracking, resolve=True)
        # The store's schema and the experiment: created here, once, before any job process.
        tracker = tracker_for(tracking, root)
        experiment_id = tracker.ensure_experiment(str(config.tracking.experiment))
        # Earlier sweeps' parents left RUNNING by a process killed outright: FAILED (stale).
        close_stale_runs(tracker, experiment_id, f"tags.`{ROLE_TAG}` = 'sweep'",
                         float(config.tracking.stale_after_s), "the sweep was killed outright")
        overrides = list(config.hydra.overrides.task)
        params = {str(k): str(v) for k, v in (config.hydra.sweeper.params or {}).items()}
        name = f"sweep_{sweep_dir.parent.name}_{sweep_dir.name}"
        parent_run_id = tracker.create_run(
            experiment_id,
            name,
            tags={
                ROLE_TAG: "sweep",
                "sweep.overrides": json.dumps(overrides),
                "sweep.params": json.dumps(params),
                "sweep.dir": str(sweep_dir),
                "sweep.jobs": str(len(jobs)),
                **git_state(root),
                **host_tags(),
            },
        )
        info.update(parent_run_id=parent_run_id, experiment_id=experiment_id,
                    tracking_uri=tracker.uri)
        # From here on the parent is closed whatever happens (Hydra swallows callback errors).
        self._parent = {**info, "tracker": tracker}
        atexit.register(self._close_on_exit)
        tracker.log_params(parent_run_id, {"sweep_jobs": len(jobs), **{
            f"sweep.{k}": v for k, v in params.items()}})
        (state / "parent.json").write_text(json.dumps(info, indent=2))

        def stop(signum: int) -> None:
            (state / "stopping").write_text(str(signum))

        def busy() -> bool:
            return any((state / "running").glob("*"))

        runtime.install_forwarding_termination_handlers(on_signal=stop, busy=busy)
        self._heartbeat = Heartbeat(tracker, parent_run_id).start()
        log.info("sweep parent run %s in experiment %s (%s)", parent_run_id,
                 config.tracking.experiment, tracker.uri)

    def _close(self, status: str) -> None:
        if self._parent is None or self._closed:
            return
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.stop()
        tracker = self._parent["tracker"]
        try:
            tracker.end_run(self._parent["parent_run_id"], status)
        except Exception:
            log.exception("could not close the sweep parent run")

    def _close_on_exit(self) -> None:
        if self._parent is None or self._closed:
            return
        outcomes = read_outcomes(self._parent["sweep_dir"])
        killed = runtime.termination_signal() is not None or any(
            o["status"] == "KILLED" for o in outcomes) or (
            _state(self._parent["sweep_dir"]) / "stopping").exists()
        status = "KILLED" if killed else "FAILED"
        log.error("sweep ended before its summary: closing parent run as %s", status)
        try:
            self._parent["tracker"].set_tags(self._parent["parent_run_id"], {
                "status_reason": "killed" if killed else "crashed",
                "jobs_recorded": str(len(outcomes))})
        except Exception:
            log.exception("could not tag the sweep parent run")
        self._close(status)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        total = int(self._parent["job_total"]) if self._parent is not None else None
        outcomes = read_outcomes(sweep_dir, total)
        failed = [o for o in outcomes if o["status"] not in ("FINISHED", "SKIPPED", "DRY_RUN")]
        killed = [o for o in outcomes if o["status"] == "KILLED"]
        table = summary_table(outcomes)
        print("\n" + table, flush=True)
        try:
            (_state(sweep_dir) / "summary.txt").write_text(table + "\n")
        except OSError as error:
            log.error("could not write the sweep summary: %s", error)
        if self._parent is not None:
            tracker = self._parent["tracker"]
            parent_run_id = self._parent["parent_run_id"]
            try:
                tracker.log_metrics(parent_run_id, {
                    "jobs_total": len(outcomes),
                    "jobs_failed": len(failed),
                    "jobs_skipped": sum(o["status"] == "SKIPPED" for o in outcomes),
                })
                tracker.log_artifact(parent_run_id, _state(sweep_dir) / "summary.txt")
            except Exception:
                log.exception("could not log the sweep summary to the parent run")
            self._close("KILLED" if killed else "FAILED" if failed else "FINISHED")
            print(f"\nMLflow: parent run {parent_run_id} in experiment "
                  f"'{config.tracking.experiment}' ({tracker.uri})", flush=True)
        if failed:
            print(f"\n{len(failed)} of {len(outcomes)} jobs failed.", file=sys.stderr, flush=True)
            raise SystemExit(1)
