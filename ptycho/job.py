"""``run_job``: one sweep point, start to finish. The one composition root.

validate the config → reset runtime state → simulate (cached) → build → train → evaluate →
figures → track. Plain Python: callable from tests without Hydra. Whatever happens, the job's
MLflow run ends FINISHED, FAILED (error message as a tag, traceback as an artifact) or KILLED.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf

from ptycho import physics, runtime, viz
from ptycho.config import ConfigError, JobSettings, format_dose, validate
from ptycho.data import DatasetPair, Groups, canvas_size, group_positions, load_or_simulate
from ptycho.evaluation import Evaluation, evaluate
from ptycho.models import (
    Models,
    baseline_targets,
    build_baseline,
    build_pinn,
    compute_input_scale,
    initial_log_scale,
    model_inputs,
    pinn_targets,
    save_model,
)
from ptycho.tracking import (
    Heartbeat,
    Tracker,
    close_stale_runs,
    default_store,
    flatten,
    git_state,
    host_tags,
    package_versions,
)
from ptycho.training import FitResult, fit, poisson_nll_per_photon, predict, reconstruct

__all__ = ["ArtifactWriteError", "JobContext", "JobOutcome", "run_job"]

log = logging.getLogger(__name__)

HEADLINE_METRICS = ("amp_frc50", "amp_ssim", "amp_psnr", "phase_frc50", "phase_ssim")


class ArtifactWriteError(OSError):
    """A run's artifacts (figures, model, arrays) could not be written: disk full, no access."""


@dataclass(frozen=True)
class JobContext:
    """What the launcher knows about this job, as plain values.

    Attributes:
        project_root: the repository root (default store and cache live under its ``outputs/``).
        output_dir: this job's own folder (logs, config).
        job_index, job_total: position in the sweep (0-based index) for progress lines.
        parent_run_id, experiment_id: the sweep's parent run (``None`` for a single run).
        overrides: the command-line overrides that made this job.
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
    sweep: bool = False
    in_launcher: bool = True


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

    @property
    def ok(self) -> bool:
        return self.status in ("FINISHED", "SKIPPED", "DRY_RUN")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "run_id": self.run_id,
            "metrics": self.metrics,
            "error": self.error,
            "config_hash": self.config_hash,
        }


def tracker_for(tracking: Mapping[str, Any], project_root: Path) -> Tracker:
    """The tracker of a ``tracking`` config section (default store under ``outputs/``)."""
    uri, artifacts = default_store(project_root)
    if tracking.get("uri"):
        uri = str(tracking["uri"])
        artifacts = tracking.get("artifact_location")
        if artifacts is None and uri.startswith("sqlite:///"):
            artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    elif tracking.get("artifact_location"):
        artifacts = str(tracking["artifact_location"])
    return Tracker(uri, artifacts)


def _progress_prefix(context: JobContext) -> str:
    return f"[{context.job_index + 1}/{context.job_total}]"


def run_job(
    cfg: DictConfig | dict[str, Any],
    context: JobContext,
    *,
    on_killed: Callable[[JobOutcome], None] | None = None,
) -> JobOutcome:
    """Run one sweep point and track it. Never raises for a failed job (the outcome says so),
    except ``KeyboardInterrupt`` (Ctrl-C, :class:`ptycho.runtime.Terminated`) and ``SystemExit``:
    then the run is marked KILLED, ``on_killed`` gets the KILLED outcome, and the interrupt is
    re-raised.

    With ``resume``, a FINISHED run of the same ``config_hash`` makes the job SKIPPED, and so
    does a RUNNING one whose process is alive. A RUNNING one whose process is gone (killed
    outright) is marked FAILED as stale, whatever ``resume`` says, and the job runs.
    """
    prefix = _progress_prefix(context)
    try:
        settings = validate(cfg)
    except ConfigError as error:
        return _invalid(cfg, context, str(error))

    name = settings.name
    if settings.dry_run:
        log.info("%s would run %s", prefix, _plan(settings))
        return JobOutcome(name, "DRY_RUN", config_hash=settings.config_hash)

    tracker = tracker_for(settings.resolved["tracking"], context.project_root)
    experiment_id = context.experiment_id or tracker.ensure_experiment(
        settings.tracking.experiment
    )
    config_hash = settings.config_hash
    running = close_stale_runs(tracker, experiment_id, f"tags.config_hash = '{config_hash}'",
                               settings.tracking.stale_after_s, "its job is run again")
    if settings.resume:
        done = tracker.find_finished(experiment_id, config_hash)
        if done:
            log.info("%s skipping %s: config_hash %s already FINISHED as run %s "
                     "(resume=false reruns it)", prefix, name, config_hash, done.run_id)
            return JobOutcome(name, "SKIPPED", run_id=done.run_id, metrics=done.metrics,
                              config_hash=config_hash)
        if running:
            live = running[0]
            log.warning("%s not running %s: config_hash %s is RUNNING as run %s (process %s "
                        "on %s, alive); resume=false runs it again anyway", prefix, name,
                        config_hash, live.run_id, live.tags.get("process_id"),
                        live.tags.get("host"))
            return JobOutcome(
                name, "ELSEWHERE", run_id=live.run_id, config_hash=config_hash,
                error=(f"not run: RUNNING elsewhere as run {live.run_id} (process "
                       f"{live.tags.get('process_id')} on {live.tags.get('host')}); rerun the "
                       "sweep once it has ended"))

    log.info("%s starting %s (config_hash %s)", prefix, name, config_hash)
    run_id = tracker.create_run(
        experiment_id, name, parent_run_id=context.parent_run_id,
        tags=_tags(settings, context),
    )
    outcome = JobOutcome(name, "RUNNING", run_id=run_id, config_hash=config_hash)
    try:
        with Heartbeat(tracker, run_id):
            tracker.log_params(run_id, flatten(settings.resolved))
            tracker.log_metrics(run_id, {"N": settings.N, "gridsize": settings.gridsize,
                                         "dose": settings.dose, "seed": settings.seed})
            outcome.metrics = _execute(settings, context, tracker, run_id)
        closed = tracker.get_run(run_id).status
        if closed != "RUNNING":  # judged stale meanwhile (heartbeat lost) and closed elsewhere
            message = (f"finished after being closed as {closed} by another sweep (its heartbeat "
                       "was lost); the results are logged, but the job may have been rerun")
            tracker.set_tags(run_id, {"error": message})
            outcome.status, outcome.error = "FAILED", message
            log.error("%s %s: %s", prefix, name, message)
            return outcome
        tracker.end_run(run_id, "FINISHED")
        outcome.status = "FINISHED"
        log.info("%s finished %s: %s", prefix, name, _headline(outcome.metrics))
    except (KeyboardInterrupt, SystemExit) as interrupt:
        if isinstance(interrupt, KeyboardInterrupt):
            reason = str(interrupt) or "interrupted by SIGINT"
        else:  # e.g. submitit's exit to requeue a preempted SLURM job
            reason = f"process exit requested (code {interrupt.code})"
        log.error("%s %s KILLED: %s", prefix, name, reason)
        _close_failed(tracker, run_id, "KILLED", reason, traceback.format_exc())
        outcome.status, outcome.error = "KILLED", reason
        if on_killed is not None:
            try:
                on_killed(outcome)
            except Exception:  # e.g. a full disk: the interrupt must still end the job
                log.exception("could not report the KILLED outcome of %s", name)
        raise
    except Exception as error:  # the job fails; the sweep goes on
        message = f"{type(error).__name__}: {error}"
        log.error("%s %s FAILED: %s", prefix, name, message)
        _close_failed(tracker, run_id, "FAILED", message, traceback.format_exc())
        outcome.status, outcome.error = "FAILED", message
    return outcome


def _close_failed(tracker: Tracker, run_id: str, status: str, message: str, trace: str) -> None:
    """Store the traceback (artifact), then close the run with the error; never raises."""
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "traceback.txt"
            path.write_text(trace)
            tracker.log_artifact(run_id, path)
    except Exception as error:  # recording must not hide the original failure
        log.warning("could not store the traceback of run %s (%s: %s)", run_id,
                    type(error).__name__, error)
    try:
        tracker.close_run(run_id, status, status.lower(), message)
    except Exception:
        log.exception("could not close run %s as %s", run_id, status)


def _invalid(cfg: DictConfig | dict[str, Any], context: JobContext, message: str) -> JobOutcome:
    """A bad config: reported before any work; in a sweep also recorded as a FAILED child."""
    raw = _raw(cfg)
    name = _raw_name(raw)
    log.error("%s invalid configuration for %s: %s", _progress_prefix(context), name, message)
    outcome = JobOutcome(name, "INVALID", error=message)
    if not context.sweep or raw.get("dry_run"):
        return outcome
    try:
        tracker = tracker_for(raw.get("tracking", {}), context.project_root)
        experiment_id = context.experiment_id or tracker.ensure_experiment(
            str(raw.get("tracking", {}).get("experiment", "default"))
        )
        run_id = tracker.create_run(
            experiment_id, name, parent_run_id=context.parent_run_id,
            tags={"overrides": json.dumps(list(context.overrides)), **host_tags()},
        )
        tracker.log_params(run_id, flatten(raw))
        _close_failed(tracker, run_id, "FAILED", f"ConfigError: {message}", message)
        outcome.run_id, outcome.status = run_id, "FAILED"
    except Exception:
        log.exception("could not record the invalid job %s", name)
    return outcome


def _raw(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        raw = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    else:
        raw = dict(cfg)
    raw.pop("hydra", None)
    return raw


def _raw_name(raw: Mapping[str, Any]) -> str:
    model = raw.get("model", {}).get("kind", "?") if isinstance(raw.get("model"), Mapping) else "?"
    dose = raw.get("dose")
    try:
        dose_text = format_dose(float(dose))
    except (TypeError, ValueError):
        dose_text = str(dose)
    return (f"N{raw.get('N')}_g{raw.get('gridsize')}_dose{dose_text}_{raw.get('loss')}_{model}"
            f"_s{raw.get('seed')}")


def _plan(settings: JobSettings) -> str:
    sim, train = settings.simulation, settings.train
    return (
        f"{settings.name}: simulate {sim.n_train}+{sim.n_test} patterns of N={settings.N} at dose "
        f"{settings.dose:g} ({sim.obj.kind} object {sim.obj.size}px, seed {sim.seed}), train "
        f"{settings.model} with {settings.loss if settings.model == 'pinn' else 'supervised_mae'}"
        f" for <= {train.epochs} epochs (batch {train.batch_size}, gridsize {settings.gridsize}, "
        f"XLA {'on' if train.jit_compile else 'off'}), config_hash {settings.config_hash}"
    )


def _tags(settings: JobSettings, context: JobContext) -> dict[str, str]:
    return {
        "config_hash": settings.config_hash,
        "overrides": json.dumps(list(context.overrides)),
        "model": settings.model,
        "loss": settings.loss,
        "training_loss": settings.loss if settings.model == "pinn" else "supervised_mae",
        "job_index": str(context.job_index),
        **git_state(context.project_root),
        **package_versions(),
        **runtime.describe_devices(),
        **host_tags(),
    }


def _headline(metrics: Mapping[str, float]) -> str:
    return "  ".join(f"{k}={metrics[k]:.4g}" for k in HEADLINE_METRICS if k in metrics)


def _build(settings: JobSettings, pair: DatasetPair, train_groups: Groups) -> Models:
    if settings.model == "baseline":
        return build_baseline(N=settings.N, gridsize=settings.gridsize,
                              bottleneck_filters=settings.bottleneck_filters)
    train = pair.train
    return build_pinn(
        N=settings.N,
        gridsize=settings.gridsize,
        probe=train.probe,
        canvas_size=canvas_size(train_groups.offsets, settings.N),
        log_scale=initial_log_scale(train.measured_dose, train.probe),
        trainable_probe=settings.trainable_probe,
        bottleneck_filters=settings.bottleneck_filters,
    )


def _execute(
    settings: JobSettings, context: JobContext, tracker: Tracker, run_id: str
) -> dict[str, float]:
    """The work of a job; returns the metrics it logged."""
    start = time.perf_counter()
    # First job of the process: GPU memory grows on demand (later calls only report devices).
    runtime.configure_devices()
    runtime.reset(settings.seed, settings.train.dtype_policy)
    cache_dir = None
    if settings.cache:
        cache_dir = Path(settings.cache_dir or context.project_root / "outputs/cache/datasets")
    pair, cache_hit = load_or_simulate(settings.simulation, cache_dir)
    time_simulate = time.perf_counter() - start
    log.info("data: %d train + %d test patterns, measured dose %.4g (cache %s) in %.1fs",
             len(pair.train), len(pair.test), pair.train.measured_dose,
             "hit" if cache_hit else "miss", time_simulate)

    train_groups = group_positions(pair.train.positions, settings.gridsize, seed=settings.seed)
    test_groups = group_positions(pair.test.positions, settings.gridsize, seed=settings.seed)
    input_scale = compute_input_scale(pair.train.counts)
    models = _build(settings, pair, train_groups)
    inputs = model_inputs(pair.train, train_groups, input_scale)
    if settings.model == "pinn":
        targets, loss = pinn_targets(pair.train, train_groups), settings.loss
    else:
        targets, loss = baseline_targets(pair.train, train_groups), "supervised_mae"

    def on_epoch(epoch: int, values: dict[str, float]) -> None:
        renamed = {("train_loss" if k == "loss" else k): v for k, v in values.items()}
        tracker.log_metrics(run_id, renamed, step=epoch)

    t = settings.train
    result = fit(
        models.train, inputs, targets, loss=loss, epochs=t.epochs, batch_size=t.batch_size,
        learning_rate=t.learning_rate, validation_fraction=t.validation_fraction,
        plateau_factor=t.plateau_factor, plateau_patience=t.plateau_patience,
        min_learning_rate=t.min_learning_rate, early_stopping_patience=t.early_stopping_patience,
        jit_compile=t.jit_compile, seed=settings.seed, on_epoch=on_epoch,
    )
    tracker.set_tags(run_id, {"xla": str(result.xla).lower()})

    eval_start = time.perf_counter()
    e = settings.eval
    recon = reconstruct(models, pair.test, test_groups, input_scale, batch_size=e.batch_size)
    evaluation = evaluate(
        recon.patches, recon.positions, pair.test.obj, keep_fraction=e.keep_fraction,
        border=e.border, phase_alignment=e.phase_alignment,
        subpixel_registration=e.subpixel_registration,
    )
    test_targets = pinn_targets(pair.test, test_groups)
    n_shown = settings.eval.n_diffraction
    extra: dict[str, float] = {}
    if settings.model == "pinn":
        test_inputs = model_inputs(pair.test, test_groups, input_scale)
        expected = predict(models.train, test_inputs, batch_size=e.batch_size)[0]
        extra["test_nll_per_photon"] = float(poisson_nll_per_photon(test_targets, expected))
        shown_expected = expected[:n_shown, ..., 0]
    else:
        # The baseline has no physics head: push its reconstruction through the forward model
        # (the code that simulated the data) at the measured dose, for the diffraction figure.
        first_channel = recon.patches[:: settings.gridsize**2][:n_shown]
        shown_expected = _forward_counts(first_channel, pair.test.probe, pair.test.measured_dose)
    shown_measured = test_targets[:n_shown, ..., 0]
    time_eval = time.perf_counter() - eval_start

    metrics = {
        **evaluation.metrics,
        **{k: v for k, v in evaluation.extra.items() if np.isfinite(v)},
        **extra,
        "measured_dose": pair.train.measured_dose,
        "time_simulate_s": time_simulate,
        "time_compile_s": result.compile_time_s,
        "time_train_s": result.train_time_s,
        "time_eval_s": time_eval,
        "train_patterns_per_s": result.patterns_per_s,
        "params_count": float(models.params_count),
        "epochs_run": float(result.epochs_run),
        "best_epoch": float(result.best_epoch),
    }
    tracker.log_metrics(run_id, metrics)
    try:
        _log_artifacts(settings, tracker, run_id, models, input_scale, result, evaluation,
                       (shown_measured, shown_expected), metrics)
    except OSError as error:  # full disk, unwritable folder: say where, keep the metrics
        raise ArtifactWriteError(
            f"could not write this run's artifacts (its metrics are logged): {error}"
        ) from error
    metrics["time_total_s"] = time.perf_counter() - start
    tracker.log_metrics(run_id, {"time_total_s": metrics["time_total_s"]})
    return metrics


def _log_artifacts(
    settings: JobSettings,
    tracker: Tracker,
    run_id: str,
    models: Models,
    input_scale: float,
    result: FitResult,
    evaluation: Evaluation,
    diffraction: tuple[np.ndarray, np.ndarray],
    metrics: Mapping[str, float],
) -> None:
    """config.yaml, metrics.json, reconstruction.npz, four figures, the model folder."""
    with tempfile.TemporaryDirectory(prefix="ptycho-artifacts-") as folder:
        root = Path(folder)
        (root / "config.yaml").write_text(yaml.safe_dump(settings.resolved, sort_keys=False))
        (root / "metrics.json").write_text(json.dumps(dict(metrics), indent=2, sort_keys=True))
        rows, cols = evaluation.region
        np.savez_compressed(
            root / "reconstruction.npz",
            stitched=evaluation.stitched,
            amplitude=evaluation.amplitude.astype(np.float32),
            amplitude_truth=evaluation.amplitude_truth.astype(np.float32),
            phase=evaluation.phase.astype(np.float32),
            phase_truth=evaluation.phase_truth.astype(np.float32),
            region=np.array([rows.start, rows.stop, cols.start, cols.stop]),
        )
        figures = root / "figures"
        figures.mkdir()
        title = settings.name
        drawn = {
            "reconstruction": viz.reconstruction_figure(evaluation, title),
            "training_curves": viz.training_curves_figure(result.history, title),
            "frc": viz.frc_figure(evaluation.frc, title),
        }
        measured, expected = diffraction
        drawn["diffraction"] = viz.diffraction_figure(measured, expected, len(measured), title)
        for figure_name, figure in drawn.items():
            figure.savefig(figures / f"{figure_name}.png", dpi=90)
        if settings.tracking.log_model:
            save_model(root / "model", models, input_scale)
        tracker.log_artifacts(run_id, root)


def _forward_counts(patches: np.ndarray, probe: np.ndarray, dose: float) -> np.ndarray:
    """Expected counts of object patches under ``probe`` at mean ``dose`` photons per pattern."""
    far_intensity = physics.intensity(physics.far_field(physics.illuminate(probe, patches)))
    scale = physics.dose_scale(far_intensity, dose)
    return physics.expected_counts(far_intensity, scale).numpy()
