"""The science of one job, with no tracking and no Hydra: simulate → build → fit → reconstruct →
evaluate, returning one :class:`PipelineResult`; for an iterative arm (``model.kind`` lsqml or
epie), simulate → reconstruct with pty-chi → evaluate the whole object the same way.

Callable from a notebook::

    from ptycho.config import validate
    from ptycho.pipeline import run_pipeline
    result = run_pipeline(validate({"N": 16, "data": {"n_train": 48}}))
    result.metrics["amp_ssim"], result.evaluation.amplitude

``ptycho.job`` wraps it in a tracked MLflow run; nothing here knows about runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ptycho import physics, runtime
from ptycho.checks import validation_count
from ptycho.config import JobConfig, ModelKind
from ptycho.data import (
    DatasetPair,
    DiffractionData,
    Groups,
    canvas_size,
    check_canvas,
    check_matched_groups,
    concatenate_groups,
    group_positions,
    holdout_region,
    load_or_simulate,
)
from ptycho.data.simulation import SimulationSpec
from ptycho.evaluation import (
    Evaluation,
    check_stitch_geometry,
    degenerate_reason,
    evaluate,
    evaluate_object,
)
from ptycho.evaluation.limit import dose_scale_of, fluence, load_or_estimate_limit
from ptycho.iterative import (
    IterationHook,
    IterativeResult,
    reconstruct_iteratively,
)
from ptycho.models import (
    Models,
    baseline_targets,
    build_baseline,
    build_pinn,
    compute_input_scale,
    grouped,
    initial_log_scale,
    model_inputs,
    pinn_targets,
)
from ptycho.training import (
    FitResult,
    dose_scale,
    fit,
    poisson_nll_per_photon,
    predict,
    reconstruct,
)

__all__ = [
    "EpochHook",
    "PipelineResult",
    "TrainingGroups",
    "iterative_inputs",
    "nll_excess",
    "run_pipeline",
    "simulation_spec",
    "training_groups",
]

log = logging.getLogger(__name__)

EpochHook = Callable[[int, dict[str, float]], None]
"""Called after each epoch with its 1-based number and its logs (``loss``, ``val_loss``, …)."""


@dataclass(frozen=True, eq=False)
class PipelineResult:
    """What one job computed.

    Attributes:
        metrics: every scalar of the job (quality metrics, timings, sizes), by name.
        evaluation: the reconstruction on the object grid, its ground truth and the metrics'
            inputs.
        diffraction: ``(measured, expected)``, each ``(n, N, N)`` float32 photons per pixel:
            the first test patterns and the counts the reconstruction predicts for them.
        cache_hit: whether the dataset came from the cache.
        models: the trained models (``None`` for an iterative arm).
        input_scale: the scale applied to the measured amplitudes (saved with the model).
        fit: what training ran (history, epochs, XLA, timings); ``None`` for an iterative arm.
        iterative: what the iterative reconstruction ran; ``None`` for the networks.
        tags: string facts for the run's tags (``xla``, ``device``).
        limit_maps: the Cramér–Rao bound per pixel of the scored region at the job's dose
            (``amp_variance``, ``phase_variance`` and their ``*_stderr``, each ``(h, w)``
            float32); empty without ``eval.crb``.
    """

    metrics: dict[str, float]
    evaluation: Evaluation
    diffraction: tuple[np.ndarray, np.ndarray]
    cache_hit: bool
    models: Models | None = None
    input_scale: float = 1.0
    fit: FitResult | None = None
    iterative: IterativeResult | None = None
    tags: dict[str, str] = field(default_factory=dict)
    limit_maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def history(self) -> dict[str, list[float]]:
        """Per-epoch (networks) or per-iteration (iterative arms) curves, by name."""
        if self.fit is not None:
            return dict(self.fit.history)
        return dict(self.iterative.history) if self.iterative is not None else {}


def nll_excess(counts: np.ndarray, expected: np.ndarray,
               truth_expected: np.ndarray) -> dict[str, float]:
    """How well a reconstruction explains its measured counts, against the true object.

    Args:
        counts: measured photons per pixel, any shape (here ``(G, N, N, C)`` or ``(M, N, N)``).
        expected: the reconstruction's expected counts for the same pixels.
        truth_expected: the true object's expected counts (the simulation's ``λ``) for them.

    Returns:
        ``test_nll_per_photon`` and ``truth_nll_per_photon`` (full Poisson NLL per photon, nats)
        and ``nll_excess_per_photon``, their difference. A maximum-likelihood fit explains the
        counts at least as well as the truth does (excess ≤ 0: it also fits some noise); a
        positive excess means the reconstruction has not reached the likelihood's optimum, so
        its quality is limited by training, not by the photons (docs/physics.md §7.1).
    """
    test = float(poisson_nll_per_photon(counts, expected))
    truth = float(poisson_nll_per_photon(counts, truth_expected))
    return {"test_nll_per_photon": test, "truth_nll_per_photon": truth,
            "nll_excess_per_photon": test - truth}


def _truth_expected(data: DiffractionData) -> np.ndarray:
    """``(M, N, N)`` float32 expected counts of the true object patches at the requested dose
    (the ``λ`` the counts were drawn from when the data were simulated)."""
    return physics.expected_counts_at_dose(data.patches, data.probe, data.dose).numpy()


def simulation_spec(config: JobConfig) -> SimulationSpec:
    """What determines the job's data (and keys the dataset cache)."""
    return SimulationSpec(N=config.N, dose=config.dose, seed=config.seed, data=config.data)


def _build(config: JobConfig, pair: DatasetPair, canvas: int) -> Models:
    model = config.model
    if model.kind == ModelKind.baseline:
        return build_baseline(N=config.N, gridsize=config.gridsize,
                              bottleneck_filters=model.bottleneck_filters,
                              activation=str(model.activation))
    return build_pinn(
        N=config.N,
        gridsize=config.gridsize,
        probe=pair.train.probe,
        canvas_size=canvas,
        log_scale=initial_log_scale(pair.train.measured_dose, pair.train.probe),
        trainable_probe=model.trainable_probe,
        bottleneck_filters=model.bottleneck_filters,
        merge_iterations=model.merge_iterations,
        activation=str(model.activation),
    )


@dataclass(frozen=True)
class TrainingGroups:
    """The groups ``fit`` sees: training groups first, then validation groups.

    Attributes:
        groups: all of them, indices into the training scan.
        validation: ``(V,)`` int64 indices (into ``groups``) of the validation groups.
        validation_patterns: ``(P,)`` int64 indices (into the scan) of the held-out region.
    """

    groups: Groups
    validation: np.ndarray
    validation_patterns: np.ndarray


def training_groups(positions: np.ndarray, gridsize: int, validation_fraction: float, *,
                    seed: int) -> TrainingGroups:
    """Hold out a region of the scan for validation and group each part on its own.

    ``round(validation_fraction · M)`` patterns around a seeded scan position are held out
    (:func:`ptycho.data.holdout_region`); training groups are formed among the others and
    validation groups among the held-out ones, so no pattern is in both (at every gridsize).

    Args:
        positions: ``(M, 2)`` float64 ``(x, y)`` pixels of the training scan.
        gridsize: g ≥ 1.
        validation_fraction: share of the patterns held out, in ``[0, 0.5]``; 0: none.
        seed: the region's and the groups' seed.
    """
    count = validation_count(len(positions), validation_fraction)
    train_patterns, val_patterns = holdout_region(positions, count, seed=seed)
    train = group_positions(positions, gridsize, seed=seed, among=train_patterns)
    if not count:
        return TrainingGroups(train, np.zeros(0, np.int64), val_patterns)
    validation = group_positions(positions, gridsize, seed=seed, among=val_patterns)
    return TrainingGroups(
        groups=concatenate_groups(train, validation),
        validation=np.arange(len(train), len(train) + len(validation), dtype=np.int64),
        validation_patterns=val_patterns,
    )


def _check_geometry(config: JobConfig, pair: DatasetPair, train_groups: Groups,
                    test_groups: Groups) -> int:
    """Before any training: the test scan can be stitched, its groups are shaped like the
    training groups and every group fits the overlap canvas. Returns the canvas side (pixels),
    sized from the train and the test groups."""
    check_stitch_geometry(pair.test.positions, N=config.N, keep_fraction=config.eval.keep_fraction)
    check_matched_groups(train_groups, test_groups, what="test groups")
    offsets = [train_groups.offsets, test_groups.offsets]
    canvas = canvas_size(offsets, config.N)
    check_canvas(offsets, config.N, canvas)
    return canvas


def run_pipeline(
    config: JobConfig,
    *,
    cache_dir: str | Path | None = None,
    on_epoch: EpochHook | None = None,
    on_iteration: IterationHook | None = None,
) -> PipelineResult:
    """Run the science of one job.

    Args:
        config: the validated job (:func:`ptycho.config.validate`).
        cache_dir: where simulated datasets are reused from and stored; ``None``: no cache.
        on_epoch: called after each training epoch (e.g. to log the curves).
        on_iteration: called after each iteration of an iterative arm.

    Raises:
        ValueError: a geometry that cannot be evaluated (before any training), bad inputs.
        ptycho.training.TrainingDiverged: the loss became NaN or infinite.
    """
    start = time.perf_counter()
    runtime.configure_devices()  # first job of the process: GPU memory grows on demand
    runtime.reset(config.seed, str(config.train.dtype_policy))
    pair, cache_hit = load_or_simulate(simulation_spec(config),
                                       cache_dir if config.data.cache else None)
    time_simulate = time.perf_counter() - start
    scans = (f"{len(pair.train)} patterns, trained on and scored (design reconstruct)"
             if pair.reconstructs else
             f"{len(pair.train)} train + {len(pair.test)} test patterns (design generalize)")
    log.info("data: %s, measured dose %.4g (cache %s) in %.1fs", scans,
             pair.train.measured_dose, "hit" if cache_hit else "miss", time_simulate)
    limit_cache = Path(cache_dir) if cache_dir is not None and config.data.cache else None
    if config.model.kind.iterative:
        result = _run_iterative(config, pair, cache_hit, time_simulate, on_iteration)
    else:
        result = _run_network(config, pair, cache_hit, time_simulate, on_epoch)
    _flag_collapse(result)
    test = pair.test
    scale = dose_scale_of(test.obj, test.probe, test.positions, config.dose)  # s², once
    result.metrics.update(fluence(test.probe, test.positions, test.obj.shape,
                                  scale * test.measured_dose / config.dose,
                                  result.evaluation.region))
    return _with_limit(config, pair, result, limit_cache, scale)


def _flag_collapse(result: PipelineResult) -> None:
    """Tag a degenerate reconstruction (a collapse, not a dose effect; see
    :func:`ptycho.evaluation.degenerate_reason`): ``degenerate`` (``true``/``false``) and
    ``degenerate_reason`` tags, and the metric ``degenerate`` (1/0) that reports group by."""
    reason = degenerate_reason(result.metrics)
    result.metrics["degenerate"] = float(reason is not None)
    result.tags["degenerate"] = "true" if reason else "false"
    if reason:
        result.tags["degenerate_reason"] = reason
        log.warning("degenerate reconstruction: %s; reports count it apart from the curves",
                    reason)


def _with_limit(config: JobConfig, pair: DatasetPair, result: PipelineResult,
                cache_dir: Path | None, scale: float) -> PipelineResult:
    """``result`` with the Cramér–Rao bound of the test scan on its metrics (``eval.crb``):
    ``amp_mse_crb``, ``phase_mse_crb`` (and their standard errors, 0 when exact), the
    efficiencies ``*_crb_efficiency = bound / MSE`` (1: at the limit; above 1 only for a biased
    estimator or one that saw more photons than the test scan) and ``time_crb_s``; ``scale``
    is the test scan's dose scale ``s²``."""
    if not config.eval.crb:
        return result
    test = pair.test
    limit, hit = load_or_estimate_limit(
        test.obj, test.probe, test.positions, result.evaluation.region,
        cache_dir, phase_alignment=str(config.eval.phase_alignment),
        samples=config.eval.crb_samples)
    bound = limit.at_scale(scale)
    metrics = result.metrics
    for part in ("amp", "phase"):
        mse = metrics[f"{part}_mse"]
        bound[f"{part}_crb_efficiency"] = bound[f"{part}_mse_crb"] / mse if mse > 0 else np.nan
    bound["time_crb_s"] = 0.0 if hit else limit.seconds
    log.info("limit: amp_mse >= %.3g, phase_mse >= %.3g (Cramér–Rao, %s, %s); efficiency "
             "amp %.3g, phase %.3g", bound["amp_mse_crb"], bound["phase_mse_crb"], limit.method,
             "cached" if hit else f"{limit.seconds:.1f}s", bound["amp_crb_efficiency"],
             bound["phase_crb_efficiency"])
    result.metrics.update({k: v for k, v in bound.items() if np.isfinite(v)})
    result.tags["crb_method"] = limit.method
    return replace(result, limit_maps=limit.maps_at_scale(scale))


def _run_network(config: JobConfig, pair: DatasetPair, cache_hit: bool, time_simulate: float,
                 on_epoch: EpochHook | None) -> PipelineResult:
    """Build, train, reconstruct the test scan and evaluate it (a PINN or the baseline)."""

    split = training_groups(pair.train.positions, config.gridsize,
                            config.train.validation_fraction, seed=config.seed)
    train_groups = split.groups
    test_groups = group_positions(pair.test.positions, config.gridsize, seed=config.seed)
    canvas = _check_geometry(config, pair, train_groups, test_groups)
    input_scale = compute_input_scale(pair.train.counts)
    models = _build(config, pair, canvas)
    inputs = model_inputs(pair.train, train_groups, input_scale)
    pinn = config.model.kind == ModelKind.pinn
    targets = (pinn_targets if pinn else baseline_targets)(pair.train, train_groups)

    t = config.train
    result = fit(
        models.train, inputs, targets, loss=config.training_loss, epochs=t.epochs,
        batch_size=t.batch_size, learning_rate=t.learning_rate,
        validation_fraction=t.validation_fraction, plateau_factor=t.plateau_factor,
        plateau_patience=t.plateau_patience, min_learning_rate=t.min_learning_rate,
        early_stopping_patience=t.early_stopping_patience, min_delta=t.min_delta,
        loss_scale=dose_scale(config.training_loss, pair.train.counts),
        validation=split.validation,
        jit_compile=runtime.resolve_jit_compile(str(t.jit_compile)), seed=config.seed,
        on_epoch=on_epoch,
    )

    eval_start = time.perf_counter()
    e = config.eval
    recon = reconstruct(models, pair.test, test_groups, input_scale, batch_size=e.batch_size)
    evaluation = evaluate(
        recon.patches, recon.positions, pair.test.obj, keep_fraction=e.keep_fraction,
        border=e.border, phase_alignment=str(e.phase_alignment),
        subpixel_registration=e.subpixel_registration, stitch_weighting=str(e.stitch_weighting),
        phase_sync=str(e.phase_sync), probe=pair.test.probe,
        counts=pair.test.counts[recon.indices], patterns=recon.indices,
    )
    test_targets = pinn_targets(pair.test, test_groups)
    shown = e.n_diffraction
    extra: dict[str, float] = {}
    if pinn:
        test_inputs = model_inputs(pair.test, test_groups, input_scale)
        expected = predict(models.train, test_inputs, batch_size=e.batch_size)[0]
        extra.update(nll_excess(test_targets, expected,
                                grouped(_truth_expected(pair.test), test_groups)))
        shown_expected = expected[:shown, ..., 0]
    else:  # no physics head: the reconstruction through the forward model at the measured dose
        first_channel = recon.patches[:: config.gridsize**2][:shown]
        shown_expected = physics.expected_counts_at_dose(
            first_channel, pair.test.probe, pair.test.measured_dose).numpy()
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
        "validation_patterns": float(len(split.validation_patterns)),
        "validation_groups": float(len(split.validation)),
        "epochs_run": float(result.epochs_run),
        "best_epoch": float(result.best_epoch),
        # the monitored loss of the weights kept (dose-scaled units): a search's objective
        "val_loss_best": float(min(result.history.get("val_loss") or result.history["loss"])),
    }
    return PipelineResult(
        metrics=metrics, models=models, input_scale=input_scale, fit=result,
        evaluation=evaluation, diffraction=(test_targets[:shown, ..., 0], shown_expected),
        cache_hit=cache_hit, tags={"xla": str(result.xla).lower()},
    )


def iterative_inputs(pair: DatasetPair) -> tuple[np.ndarray, np.ndarray, float]:
    """What an iterative arm reconstructs from: the scored scan's ``(counts (M, N, N) float32,
    positions (M, 2) float64 (x, y), measured dose)`` (with ``data.design=reconstruct``, the
    patterns the networks train on)."""
    test = pair.test
    counts = np.asarray(test.counts, np.float32)
    return counts, np.asarray(test.positions, np.float64), float(
        counts.sum(axis=(1, 2), dtype=np.float64).mean())


def _run_iterative(config: JobConfig, pair: DatasetPair, cache_hit: bool, time_simulate: float,
                   on_iteration: IterationHook | None) -> PipelineResult:
    """Reconstruct with pty-chi and score the whole object on the PINN's region of the test scan."""
    e = config.eval
    check_stitch_geometry(pair.test.positions, N=config.N, keep_fraction=e.keep_fraction)
    counts, positions, dose = iterative_inputs(pair)
    outcome = reconstruct_iteratively(
        config.model.kind, counts, positions, pair.test.probe, pair.test.obj.shape, dose,
        settings=config.model, seed=config.seed, on_iteration=on_iteration)
    eval_start = time.perf_counter()
    evaluation = evaluate_object(
        outcome.obj, pair.test.positions, config.N, pair.test.obj, keep_fraction=e.keep_fraction,
        border=e.border, phase_alignment=str(e.phase_alignment),
        subpixel_registration=e.subpixel_registration)
    expected = outcome.expected if outcome.expected is not None else np.zeros_like(counts)
    time_eval = time.perf_counter() - eval_start
    metrics = {
        **evaluation.metrics,
        **{k: v for k, v in evaluation.extra.items() if np.isfinite(v)},
        **nll_excess(pair.test.counts, expected, _truth_expected(pair.test)),
        "measured_dose": pair.train.measured_dose,
        "time_simulate_s": time_simulate,
        "time_reconstruct_s": outcome.time_s,
        "time_eval_s": time_eval,
        "iterations_run": float(outcome.iterations_run),
        "patterns_reconstructed": float(len(counts)),
        "patterns_per_s_per_iteration": (len(counts) * outcome.iterations_run
                                         / max(outcome.time_s, 1e-9)),
    }
    shown = e.n_diffraction
    return PipelineResult(
        metrics=metrics, evaluation=evaluation,
        diffraction=(pair.test.counts[:shown], expected[:shown]), cache_hit=cache_hit,
        iterative=outcome,
        tags={"device": outcome.device},
    )
