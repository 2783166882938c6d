"""Hydra glue: the schema's registration, the job context, the sweep's parent run, the
end-of-sweep summary.

With ``run.py`` and the plugins, the only code that touches Hydra — and it reads Hydra's state
only from the ``config`` its callbacks are given and from the ``HydraConfig`` that ``run.py``
passes in. The sweep's files live in one :class:`ptycho.runner.sweep_state.SweepState`.

A multirun gets one parent MLflow run, created once in the launching process before any job
starts (``on_multirun_start``). Each job records its outcome; ``on_multirun_end`` prints the
summary table and closes the parent. The exit code is not raised from a callback (that would
skip the callbacks after it): ``run.py`` asks :func:`finish` once Hydra has returned, which also
closes a parent that a crash or a signal left open (KILLED after a termination signal or a KILLED
job, else FAILED). The report callback therefore works before or after this one.

Sweep parents left RUNNING by a sweep killed outright are marked FAILED (stale) when the next
sweep of the experiment starts; stale children are handled by each job (:mod:`.job`).
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ptycho.config import ConfigError, JobConfig, validate
from ptycho.config.structured import SCHEMA_NAME, hydra_schema
from ptycho.runner.job import HEADLINE_METRICS, TRUTH_FREE_HEADLINE, open_tracker
from ptycho.runner.outcome import JobContext
from ptycho.runner.process import PROCESS
from ptycho.runner.signals import install_forwarding_termination_handlers, termination_signal
from ptycho.runner.sweep_state import SweepState
from ptycho.runner.tracking import (
    ROLE_TAG,
    Heartbeat,
    Tracker,
    close_stale_runs,
    git_state,
    host_tags,
)
from ptycho.runner.tracking.view import dose_view_link

__all__ = ["SweepCallback", "expand_sweep", "finish", "job_context", "job_died",
           "register_configs", "summary_table", "sweep_plan", "swept_keys"]

log = logging.getLogger(__name__)


def register_configs() -> None:
    """Register the generated schema (:func:`ptycho.config.structured.hydra_schema`) with Hydra's
    ConfigStore as ``ptycho_schema``, the first entry of ``conf/config.yaml``'s defaults: every
    composed config is then typed and closed. Called by the entry point, never at import."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=hydra_schema())


def compose_job(overrides: list[str], project_root: Path) -> JobConfig:
    """The validated job ``python run.py <overrides>`` would run, composed without running it
    (for tools that need a job's data: ``python -m ptycho.export``).

    Raises:
        ConfigError: a bad override or value, naming it.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(Path(project_root).resolve() / "conf"),
                                   version_base="1.3"):
            composed = compose(config_name="config", overrides=list(overrides))
    except Exception as error:  # Hydra's errors name the override
        raise ConfigError(str(error).splitlines()[0]) from None
    return validate(composed)


def project_root_of(config: DictConfig) -> Path:
    """The folder holding ``conf/`` (the project root), from Hydra's config sources."""
    for source in config.hydra.runtime.config_sources:
        if source.provider == "main" and str(source.path).startswith("file://"):
            return Path(str(source.path).removeprefix("file://")).resolve().parent
    return Path.cwd()


def expand_sweep(config: DictConfig) -> list[list[str]]:
    """The job override lists the basic sweeper produces (the sweep's ``params``, then the
    command line, whose value of a key wins), in its order, for counting jobs before they run.

    Written with Hydra's public override parser (``sweep_string_iterator``) rather than the
    basic sweeper's private ``split_arguments``; ``tests/test_sweep.py`` holds the two equal.
    """
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.params or {}).items()]
    arguments = list(config.hydra.overrides.task)
    choices: OrderedDict[str, list[str]] = OrderedDict()
    for override in OverridesParser.create().parse_overrides(params + arguments):
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ValueError(f"{override.input_line}: only discrete sweeps are supported "
                                 "(a list, range() or glob)")
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*choices.values())]


def sweep_plan(config: DictConfig) -> tuple[int, list[str]]:
    """``(number of jobs, swept keys)`` of a multirun: the basic sweeper's product
    (:func:`expand_sweep`), or a search sweeper's ``n_trials`` over its searched keys (it
    corrects the number once it has opened its study, ``SweepState.set_job_total``)."""
    sweeper = config.hydra.sweeper
    if "n_trials" in sweeper:
        keys = [str(key) for key in (sweeper.get("params") or {})]
        for override in OverridesParser.create().parse_overrides(
                list(config.hydra.overrides.task)):
            if override.is_sweep_override():
                keys.append(override.get_key_element())
        return int(sweeper.n_trials), sorted(set(keys))
    jobs = expand_sweep(config)
    return len(jobs), swept_keys(jobs)


def swept_keys(jobs: list[list[str]]) -> list[str]:
    """Keys that take more than one value over ``jobs`` (the sweep's axes)."""
    values: dict[str, set[str]] = {}
    for job in jobs:
        for override in job:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    return sorted(key for key, seen in values.items() if len(seen) > 1)


def job_context(hydra: Any, project_root: Path) -> JobContext:
    """What Hydra knows about the running job (``hydra``: ``HydraConfig.get()``, passed in by
    the entry point), as a :class:`JobContext`."""
    output_dir = Path(hydra.runtime.output_dir)
    overrides = tuple(hydra.overrides.task)
    if hydra.mode != RunMode.MULTIRUN:
        return JobContext(project_root=project_root, output_dir=output_dir, overrides=overrides)
    state = SweepState(hydra.sweep.dir)
    info = state.read()
    return JobContext(project_root=project_root, output_dir=output_dir, overrides=overrides,
                      job_index=int(hydra.job.num),
                      job_total=int(info.get("job_total", 0)) or int(hydra.job.num) + 1,
                      parent_run_id=info.get("parent_run_id"),
                      experiment_id=info.get("experiment_id"),
                      swept=tuple(info.get("swept", ())), sweep=True,
                      in_launcher=state.is_launcher(info))


def job_died(sweep_dir: str | Path, job_index: int, reason: str) -> None:
    """A launcher saw job ``job_index``'s process die without a result: record it FAILED in the
    sweep's summary and close the RUNNING run it left (if it got that far), saying why."""
    state = SweepState(sweep_dir)
    info = state.read()
    outcome: dict[str, Any] = {"name": f"job {job_index + 1}", "status": "FAILED",
                               "metrics": {}, "error": reason}
    if info.get("parent_run_id") and info.get("tracking_uri"):
        try:
            tracker = Tracker(info["tracking_uri"])
            for run in tracker.children(info["experiment_id"], info["parent_run_id"]):
                if run.status != "RUNNING" or run.tags.get("job_index") != str(job_index):
                    continue
                tracker.close_run(run.run_id, "FAILED", "died", reason)
                outcome.update(name=run.name, run_id=run.run_id,
                               config_hash=run.tags.get("config_hash"))
        except Exception:
            log.exception("could not close the run of dead job %d", job_index)
    state.record(job_index, outcome)


def summary_table(outcomes: list[dict[str, Any]]) -> str:
    """A fixed-width table: job, status, headline metrics, the error of failed jobs, why a
    skipped duplicate was not run and why a finished run is degenerate (status ``DEGENERATE``:
    it finished, but its reconstruction collapsed)."""
    width = max([42, *(len(o["name"]) for o in outcomes)])
    shown = HEADLINE_METRICS  # and the truth-free scores where any job has them
    if any(key in outcome.get("metrics", {}) for outcome in outcomes
           for key in TRUTH_FREE_HEADLINE):
        shown = (*HEADLINE_METRICS, *TRUTH_FREE_HEADLINE)
    header = f"{'#':>3}  {'job':<{width}} {'status':<10}" + "".join(
        f" {k:>{max(11, len(k))}}" for k in shown)
    lines = [header, "-" * len(header)]
    for outcome in outcomes:
        values = "".join(
            f" {outcome['metrics'][k]:>{max(11, len(k))}.4g}" if k in outcome.get("metrics", {})
            else f" {'-':>{max(11, len(k))}}" for k in shown
        )
        status = outcome["status"]
        if status == "FINISHED" and outcome.get("metrics", {}).get("degenerate"):
            status = "DEGENERATE"  # finished, but a collapse: the report keeps it apart
        lines.append(f"{outcome['job_index'] + 1:>3}  {outcome['name']:<{width}} "
                     f"{status:<10}{values}")
        if outcome.get("error"):
            lines.append(f"{'':>5}-> {outcome['error'][:300]}")
        elif outcome.get("note"):
            lines.append(f"{'':>5}-> {outcome['note'][:300]}")
    return "\n".join(lines)


class SweepCallback(Callback):
    """Creates the parent run before jobs and closes it, with a summary, after them."""

    def __init__(self) -> None:
        self._state: SweepState | None = None
        self._tracker: Tracker | None = None
        self._parent_run_id: str | None = None
        self._experiment_id = ""
        self._job_total = 0
        self._closed = False
        self._heartbeat: Heartbeat | None = None
        self.exit_code = 0

    def __getstate__(self) -> dict[str, Any]:
        # Parallel launchers pickle the callbacks into every job process. The parent run's
        # tracker, heartbeat and closing duty stay with the launching process.
        return {"_state": None, "_tracker": None, "_parent_run_id": None, "_job_total": 0,
                "_closed": True, "_heartbeat": None, "exit_code": 0, "_experiment_id": ""}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        state = self._state = SweepState(sweep_dir)
        job_total, swept = sweep_plan(config)
        self._job_total = job_total
        state.start(job_total=job_total, swept=swept)
        PROCESS.launched.append(self)  # closed by finish() (Hydra instantiates callbacks)
        print(f"sweep: {job_total} jobs -> {sweep_dir}", flush=True)
        if config.dry_run:
            return
        root = project_root_of(config)
        tracking = OmegaConf.to_container(config.tracking, resolve=True)
        assert isinstance(tracking, dict)
        # The store's schema and the experiment: created here, once, before any job process.
        tracker, store = open_tracker(tracking.get("uri"), tracking.get("artifact_location"),
                                      root)
        experiment_id = tracker.ensure_experiment(str(config.tracking.experiment))
        # Earlier sweeps' parents left RUNNING by a process killed outright: FAILED (stale).
        close_stale_runs(tracker, experiment_id, f"tags.`{ROLE_TAG}` = 'sweep'",
                         float(config.tracking.stale_after_s), "the sweep was killed outright")
        params = {str(k): str(v) for k, v in (config.hydra.sweeper.params or {}).items()}
        parent_run_id = tracker.create_run(
            experiment_id, f"sweep_{sweep_dir.parent.name}_{sweep_dir.name}",
            tags={ROLE_TAG: "sweep",
                  "sweep.overrides": json.dumps(list(config.hydra.overrides.task)),
                  "sweep.params": json.dumps(params), "sweep.dir": str(sweep_dir),
                  "sweep.jobs": str(job_total), **git_state(root), **host_tags()})
        # From here on the parent is closed whatever happens (finish() closes what is left).
        self._tracker, self._parent_run_id = tracker, parent_run_id
        self._experiment_id = experiment_id
        tracker.log_params(parent_run_id, {"sweep_jobs": job_total, **{
            f"sweep.{k}": v for k, v in params.items()}})
        state.set_parent(parent_run_id=parent_run_id, experiment_id=experiment_id,
                         tracking_uri=tracker.uri)
        install_forwarding_termination_handlers(on_signal=state.stop, busy=state.busy)
        self._heartbeat = Heartbeat(tracker, parent_run_id).start()
        log.info("sweep parent run %s in experiment %s (store %s)", parent_run_id,
                 config.tracking.experiment, store)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        state = self._state or SweepState(config.hydra.sweep.dir)
        # A search sweeper corrects the total once it knows how many trials remain.
        job_total = int(state.read().get("job_total", self._job_total) or 0)
        outcomes = state.outcomes(job_total or None)
        failed = [o for o in outcomes if o["status"] not in ("FINISHED", "SKIPPED", "DRY_RUN")]
        killed = [o for o in outcomes if o["status"] == "KILLED"]
        table = summary_table(outcomes)
        print("\n" + table, flush=True)
        summary = state.write_summary(table)
        if self._tracker is not None and self._parent_run_id is not None:
            try:
                # Tags, not metrics: as metrics they filled the UI's chart view of a study
                # with three bookkeeping charts and no dose curve.
                self._tracker.set_tags(self._parent_run_id, {
                    "jobs_total": str(len(outcomes)),
                    "jobs_failed": str(len(failed)),
                    "jobs_skipped": str(sum(o["status"] == "SKIPPED" for o in outcomes)),
                    "jobs_degenerate": str(sum(bool(o.get("metrics", {}).get("degenerate"))
                                               for o in outcomes
                                               if o["status"] == "FINISHED")),
                })
                if summary is not None:
                    self._tracker.log_artifact(self._parent_run_id, summary)
            except Exception:
                log.exception("could not log the sweep summary to the parent run")
            self._close("KILLED" if killed else "FAILED" if failed else "FINISHED")
            print(f"\nMLflow: parent run {self._parent_run_id} in experiment "
                  f"'{config.tracking.experiment}' ({self._tracker.uri})", flush=True)
            served = self._tracker.uri.startswith(("http://", "https://"))
            ui_url = self._tracker.uri if served else "http://127.0.0.1:5000"
            print(f"Its dose-response curves ({'the server' if served else 'make ui'}, then "
                  f"open):\n  {dose_view_link(ui_url, self._experiment_id)}", flush=True)
        if failed:
            print(f"\n{len(failed)} of {len(outcomes)} jobs failed.", file=sys.stderr,
                  flush=True)
            self.exit_code = 1

    def _close(self, status: str) -> None:
        if self._tracker is None or self._parent_run_id is None or self._closed:
            return
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.stop()
        try:
            self._tracker.end_run(self._parent_run_id, status)
        except Exception:
            log.exception("could not close the sweep parent run")

    def close_unfinished(self) -> None:
        """The sweep ended before its summary (a crash, a signal): close the parent as KILLED
        (a termination signal, a KILLED job, a stopping sweep) or FAILED."""
        if self._closed or self._tracker is None or self._parent_run_id is None:
            return
        assert self._state is not None
        outcomes = self._state.outcomes()
        killed = (termination_signal() is not None or self._state.stopping
                  or any(o["status"] == "KILLED" for o in outcomes))
        status = "KILLED" if killed else "FAILED"
        log.error("sweep ended before its summary: closing parent run as %s", status)
        try:
            self._tracker.set_tags(self._parent_run_id, {
                "status_reason": "killed" if killed else "crashed",
                "jobs_recorded": str(len(outcomes))})
        except Exception:
            log.exception("could not tag the sweep parent run")
        self._close(status)
        self.exit_code = 1


def finish() -> int:
    """After Hydra returns (or raises): close any parent this process's sweeps left open and
    return the exit code (1 when a job failed or a sweep did not end cleanly, else 0)."""
    code = 0
    while PROCESS.launched:
        callback = PROCESS.launched.pop()
        callback.close_unfinished()
        code = max(code, callback.exit_code)
    return code
