"""``run_job``: one sweep point, start to finish. The composition root.

validate → open the store → reuse or run → :func:`ptycho.pipeline.run_pipeline` inside a
:class:`~ptycho.runner.tracking.TrackedRun` → artifacts (:mod:`ptycho.artifacts`). Plain Python,
no Hydra: tests call it in-process. Whatever happens, the job's run ends FINISHED, FAILED (error
as a tag, traceback as an artifact) or KILLED, and ``run_job`` returns a :class:`JobOutcome` — it
raises only to stop the process (``KeyboardInterrupt``, ``SystemExit``). The store may fail too
(a locked database, a server blip): the job then ends FAILED with a message, never with a
traceback that would cost the sweep its summary.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptycho import runtime
from ptycho.config import (
    ConfigError,
    DataSource,
    JobConfig,
    check_tracking_uri,
    format_dose,
    run_name,
    settings_class,
    settings_classes,
    validate,
)
from ptycho.runner.outcome import JobContext, JobOutcome
from ptycho.runner.tracking import (
    DatasetRecord,
    PriorRun,
    TrackedRun,
    Tracker,
    flatten,
    git_state,
    host_tags,
    package_versions,
    prior_run,
    record_failure,
    resolve_store,
)
from ptycho.runner.tracking.view import VS_DOSE_METRICS

__all__ = ["HEADLINE_METRICS", "TRUTH_FREE_HEADLINE", "ArtifactWriteError", "open_tracker",
           "run_job"]

log = logging.getLogger(__name__)

HEADLINE_METRICS = ("amp_ssim", "amp_nrmse", "amp_frc50_nyquist", "phase_ssim", "phase_nrmse",
                    "phase_frc50_nyquist")
"""What a finished job's log line and the sweep's summary table show: FRC as a fraction of
Nyquist, comparable across N (the ring index is not)."""
TRUTH_FREE_HEADLINE = ("halfsplit_amp_frc_halfbit", "halfsplit_phase_frc_halfbit",
                       "ref_amp_ssim", "ref_phase_ssim")
"""Shown beside (or, for a measured scan, instead of) the headline where a job has them."""



class ArtifactWriteError(OSError):
    """A run's artifacts (figures, model, arrays) could not be written: disk full, no access."""


def open_tracker(uri: str | None, artifact_location: str | None,
                 project_root: Path) -> tuple[Tracker, str]:
    """The tracker of a job's store (config, then ``MLFLOW_TRACKING_URI``, then the project's
    SQLite file) and a phrase that says which it is, for the log."""
    chosen, artifacts, source = resolve_store(uri, artifact_location, project_root)
    where = {"config": "tracking.uri", "MLFLOW_TRACKING_URI": "$MLFLOW_TRACKING_URI",
             "project": "the project's default store"}[source]
    return Tracker(chosen, artifacts), f"{chosen} (from {where})"


def run_job(cfg: DictConfig | Mapping[str, Any], context: JobContext, *,
            on_killed: Callable[[JobOutcome], None] | None = None) -> JobOutcome:
    """Run one sweep point and track it. Never raises for a failed job (the outcome says so),
    except ``KeyboardInterrupt`` (Ctrl-C, :class:`ptycho.runner.signals.Terminated`) and
    ``SystemExit``: then the run is marked KILLED, ``on_killed`` gets the KILLED outcome, and the
    interrupt is re-raised.

    With ``resume``, a FINISHED run of the same ``config_hash`` makes the job SKIPPED; a RUNNING
    one whose process is alive makes it ELSEWHERE. A RUNNING one whose process is gone (killed
    outright) is marked FAILED as stale, whatever ``resume`` says, and the job runs. A job the
    sweep already ran (its arm does not use a swept setting) is SKIPPED whatever ``resume``
    says.
    """
    try:
        config = validate(cfg)
        _check_measured(config)
    except ConfigError as error:
        return _invalid(cfg, context, str(error))
    name = config.name(context.name_extras())
    if config.dry_run:
        log.info("%s would run %s", context.prefix, _plan(config, name))
        return JobOutcome(name, "DRY_RUN", config_hash=config.config_hash)
    try:  # the pre-run phase: a store that fails here fails the job, not the sweep
        tracker, store = open_tracker(config.tracking.uri, config.tracking.artifact_location,
                                      context.project_root)
        experiment_id = context.experiment_id or tracker.ensure_experiment(
            config.tracking.experiment)
        prior = prior_run(tracker, experiment_id, config.config_hash, resume=config.resume,
                          stale_after_s=config.tracking.stale_after_s,
                          same_sweep=context.parent_run_id)
    except Exception as error:
        message = f"tracking store unavailable before the run: {type(error).__name__}: {error}"
        log.error("%s %s FAILED: %s", context.prefix, name, message)
        return JobOutcome(name, "FAILED", error=message, config_hash=config.config_hash)
    reused = _reuse(config, context, name, prior)
    if reused is not None:
        return reused
    log.info("%s starting %s (config_hash %s; store %s)", context.prefix, name,
             config.config_hash, store)
    # TensorFlow is imported from here on (device tags, then the work), and only here: a dry
    # run, a bad value or a skipped job never pays for it. Its start-up banners are filtered.
    runtime.quiet_tensorflow()
    return _tracked(config, context, name, tracker, experiment_id, on_killed)


def _reuse(config: JobConfig, context: JobContext, name: str,
           prior: PriorRun) -> JobOutcome | None:
    """The outcome of a job the store already has (SKIPPED, ELSEWHERE), or ``None``: run it."""
    config_hash, done, live = config.config_hash, prior.finished, prior.running
    same_sweep = (live is not None and context.parent_run_id is not None
                  and live.tags.get("mlflow.parentRunId") == context.parent_run_id)
    duplicate = done if done is not None else live if same_sweep else None
    if duplicate is not None:  # a parallel launcher's duplicate running now is no failure
        note = None
        if duplicate.name != name or (context.parent_run_id is not None and duplicate.tags.get(
                "mlflow.parentRunId") == context.parent_run_id):  # this sweep ran it already
            note = f"same job as {duplicate.name}{' (running now)' if done is None else ''}"
            if config.unused:
                note += f": {config.model.kind} does not use {', '.join(config.unused)}"
        log.info("%s skipping %s: %s (config_hash %s, run %s)", context.prefix, name,
                 note or "already FINISHED (resume=false reruns it)", config_hash,
                 duplicate.run_id)
        return JobOutcome(name, "SKIPPED", run_id=duplicate.run_id, config_hash=config_hash,
                          metrics=done.metrics if done is not None else {}, note=note)
    if live is None:
        return None
    where = f"process {live.tags.get('process_id')} on {live.tags.get('host')}"
    log.warning("%s not running %s: config_hash %s is RUNNING as run %s (%s, alive); "
                "resume=false runs it again anyway", context.prefix, name, config_hash,
                live.run_id, where)
    return JobOutcome(name, "ELSEWHERE", run_id=live.run_id, config_hash=config_hash,
                      error=(f"not run: RUNNING elsewhere as run {live.run_id} ({where}); "
                             "rerun the sweep once it has ended"))


def _tracked(config: JobConfig, context: JobContext, name: str, tracker: Tracker,
             experiment_id: str, on_killed: Callable[[JobOutcome], None] | None) -> JobOutcome:
    """The job in its run, closed exactly once; the outcome says how it ended."""
    outcome = JobOutcome(name, "RUNNING", config_hash=config.config_hash)
    run = TrackedRun(tracker, experiment_id, name, parent_run_id=context.parent_run_id,
                     tags=_tags(config, context),
                     system_metrics_s=config.tracking.system_metrics_s)
    try:
        with run:
            outcome.run_id = run.run_id
            outcome.metrics, outcome.note = _execute(config, context, tracker, run.run_id, name)
    except (KeyboardInterrupt, SystemExit):
        outcome.status, outcome.error = "KILLED", run.error or "interrupted before its run began"
        outcome.note = None
        log.error("%s %s KILLED: %s", context.prefix, name, outcome.error)
        if on_killed is not None:
            try:
                on_killed(outcome)
            except Exception:  # e.g. a full disk: the interrupt must still end the job
                log.exception("could not report the KILLED outcome of %s", name)
        raise
    except Exception as error:  # the run could not even be created
        outcome.status = "FAILED"
        outcome.error = f"could not create the run: {type(error).__name__}: {error}"
        log.error("%s %s FAILED: %s", context.prefix, name, outcome.error)
        return outcome
    outcome.status, outcome.error = run.status, run.error
    if run.status == "FINISHED":
        log.info("%s finished %s: %s", context.prefix, name, _headline(outcome.metrics))
    else:
        outcome.note = None
        log.error("%s %s %s: %s", context.prefix, name, run.status, run.error)
    return outcome


def _check_measured(config: JobConfig) -> None:
    """A measured scan's file, read in full before any run or work (a dry run too): what is
    wrong with it, or a dose above its own, makes the job INVALID, naming the field."""
    if config.data.source != DataSource.file:
        return
    runtime.quiet_tensorflow()  # the data layer imports TensorFlow
    from ptycho.pipeline import check_measured

    try:
        check_measured(config)
    except ValueError as error:
        where = "data.path" if str(config.data.path) in str(error) else (
            f"data.path={config.data.path}")
        raise ConfigError(f"{where}: {error}") from None


def _execute(config: JobConfig, context: JobContext, tracker: Tracker, run_id: str,
             name: str) -> tuple[dict[str, float], str | None]:
    """The job inside its run: parameters, the pipeline with its curves, metrics, artifacts.
    Returns the metrics and, for a degenerate reconstruction, a note saying why."""
    from ptycho.artifacts import write_artifacts  # TensorFlow and matplotlib: only for real work
    from ptycho.pipeline import run_pipeline

    tracker.log_params(run_id, flatten(config.resolved()))
    # the axes as metrics too, so the UI's charts can put them on an axis (log10_dose: the
    # dose-response axis, linear in the chart's default scale)
    tracker.log_metrics(run_id, {"N": config.N, "gridsize": config.gridsize,
                                 "dose": config.dose, "log10_dose": math.log10(config.dose),
                                 "seed": config.seed})

    def on_progress(step: int, values: dict[str, float]) -> None:
        tracker.log_metrics(run_id, values, step=step)

    cache_dir = Path(config.data.cache_dir or context.project_root / "outputs/cache/datasets")
    result = run_pipeline(config, cache_dir=cache_dir, on_progress=on_progress)
    metrics = dict(result.metrics)
    tracker.set_tags(run_id, result.tags)
    tracker.log_metrics(run_id, metrics)
    # The headline metrics again at step = the dose (photons per pattern): in the UI's chart
    # view, runs grouped by the tag ``arm`` then draw one line per arm through the doses
    # (a line chart of ``vs_dose/<metric>``, x = step on a log scale; docs/tracking.md).
    tracker.log_metrics(run_id, {f"vs_dose/{key}": metrics[key] for key in VS_DOSE_METRICS
                                 if key in metrics}, step=max(round(config.dose), 0))
    try:  # what the run saw, for the UI's Dataset column; secondary: never fails the job
        tracker.log_datasets(run_id, [DatasetRecord(**record) for record in result.datasets])
    except Exception as error:
        log.warning("could not log the run's datasets to MLflow: %s", error)
    try:
        with tempfile.TemporaryDirectory(prefix="ptycho-artifacts-") as folder:
            write_artifacts(folder, config, result, title=name)
            tracker.log_artifacts(run_id, folder)
    except OSError as error:  # full disk, unwritable folder: say where, keep the metrics
        raise ArtifactWriteError(
            f"could not write this run's artifacts (its metrics are logged): {error}"
        ) from error
    reason = result.tags.get("degenerate_reason")  # the summary table marks it; the report
    return metrics, f"degenerate reconstruction: {reason}" if reason else None  # sets it apart


def _invalid(cfg: DictConfig | Mapping[str, Any], context: JobContext,
             message: str) -> JobOutcome:
    """A bad config: reported before any work; in a sweep also recorded as a FAILED child."""
    raw = _raw(cfg)
    name = _raw_name(raw) + "".join(f"_{k}={v}" for k, v in context.name_extras().items())
    log.error("%s invalid configuration for %s: %s", context.prefix, name, message)
    outcome = JobOutcome(name, "INVALID", error=message)
    if not context.sweep or raw.get("dry_run"):
        return outcome
    tracking = raw.get("tracking") if isinstance(raw.get("tracking"), Mapping) else {}
    try:
        uri = tracking.get("uri")
        if uri:
            check_tracking_uri("tracking.uri", str(uri))
        tracker, _ = open_tracker(uri or None, tracking.get("artifact_location"),
                                  context.project_root)
        experiment_id = context.experiment_id or tracker.ensure_experiment(
            str(tracking.get("experiment", "default")))
        run_id = tracker.create_run(
            experiment_id, name, parent_run_id=context.parent_run_id,
            tags={"overrides": json.dumps(list(context.overrides)), **host_tags()},
        )
        tracker.log_params(run_id, flatten(raw))
        record_failure(tracker, run_id, "FAILED", f"ConfigError: {message}", message)
        outcome.run_id, outcome.status = run_id, "FAILED"
    except Exception as error:  # a bad store setting is often the invalid value itself
        log.warning("could not record the invalid job %s in the store (%s: %s)", name,
                    type(error).__name__, str(error).splitlines()[0] if str(error) else "")
    return outcome


def _raw(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        try:
            raw = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        except Exception:
            raw = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    else:
        raw = dict(cfg)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    return raw  # type: ignore[return-value]


def _raw_name(raw: Mapping[str, Any]) -> str:
    """The invalid job's run name: as a valid one's would be (without its arm's unused axes)
    where the kind and the dose can be read, else every axis as it was given."""
    model = raw.get("model") if isinstance(raw.get("model"), Mapping) else {}
    kind, dose = str(model.get("kind", "?")), raw.get("dose")
    try:
        dose_text, readable = format_dose(float(dose)), True  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        dose_text, readable = str(dose), False
    if readable and kind in settings_classes():
        axes = {key: raw.get(key) for key in ("N", "gridsize", "loss", "seed")}
        return run_name({**axes, "dose": float(dose), "model": {"kind": kind}},  # type: ignore[arg-type]
                        settings_class(kind).unused())
    return (f"N{raw.get('N')}_g{raw.get('gridsize')}_dose{dose_text}_{raw.get('loss')}"
            f"_{kind}_s{raw.get('seed')}")


def _plan(config: JobConfig, name: str) -> str:
    data, model = config.data, config.resolved()["model"]
    scans = ("1 scan" if str(data.design) == "reconstruct"
             else "2 scans (training object, independent test object)")
    settings = ", ".join(f"{key} {value}" for key, value in model.items() if key != "kind")
    training = ("" if "train" in config.unused else f", {config.training_loss} for <= "
                f"{config.train.epochs} epochs of {config.train.batch_size}")
    unused = f"; {', '.join(config.unused)} unused" if config.unused else ""
    return (f"{name}: simulate {scans} of {data.n_train} patterns of N={config.N} at dose "
            f"{config.dose:g} ({data.object.kind} object {data.object.size}px, seed "
            f"{config.seed}, design {data.design}), reconstruct with {model['kind']} "
            f"({settings}){training}{unused}, config_hash {config.config_hash}")


def _tags(config: JobConfig, context: JobContext) -> dict[str, str]:
    return {**({"unused": ", ".join(config.unused)} if config.unused else {}),
            "config_hash": config.config_hash, "overrides": json.dumps(list(context.overrides)),
            "swept": json.dumps(context.name_extras()), "model": str(config.model.kind),
            "arm": config.arm, "tuning": config.tuning, "loss": str(config.loss),
            "condition": config.condition, "refinement": config.refinement or "none",
            "training_loss": config.training_loss,
            "job_index": str(context.job_index), **git_state(context.project_root),
            **package_versions(), **runtime.describe_devices(), **host_tags()}


def _headline(metrics: Mapping[str, float]) -> str:
    return "  ".join(f"{k}={metrics[k]:.4g}" for k in (*HEADLINE_METRICS, *TRUTH_FREE_HEADLINE)
                     if k in metrics)

