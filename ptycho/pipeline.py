"""The science of one job, with no tracking and no Hydra: data → arm → score, returning one
:class:`PipelineResult`.

- data: simulate (or reuse from the cache) the job's scans, with their truth;
- arm: ``ptycho.arms.arm(model.kind)`` reconstructs the scored scan from the measurement alone
  (:class:`~ptycho.arms.ArmInput` carries no truth, except the true patches of the training scan
  for an arm whose settings declare ``supervised``);
- score: align the finished object to the truth on the scan's region, metrics, the fit to the
  counts against the truth's, the fluence and the Cramér–Rao bound.

Callable from a notebook::

    from ptycho.config import validate
    from ptycho.pipeline import run_pipeline
    result = run_pipeline(validate({"N": 16, "data": {"n_train": 48}}))
    result.metrics["amp_ssim"], result.evaluation.amplitude

``ptycho.runner`` wraps it in a tracked MLflow run; nothing here knows about runs.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ptycho import physics, runtime
from ptycho.arms import ArmInput, ProgressHook, Reconstruction, arm
from ptycho.config import DataSource, JobConfig, TruthFree, format_dose
from ptycho.data import DatasetPair, DiffractionData, cache_key, load_or_simulate
from ptycho.data.measured import load_measured, thinning_fraction
from ptycho.data.scan import position_error
from ptycho.data.simulation import DataSpec
from ptycho.evaluation import Evaluation, align_probe, degenerate_reason, evaluate, probe_error
from ptycho.evaluation.limit import fluence, load_or_estimate_limit
from ptycho.reconstruction.stitch import scan_weight
from ptycho.truth_free import agreement, data_spec, halfsplit_frc, reference_object

__all__ = [
    "Conditions", "PipelineResult", "check_measured", "compare_conditions", "nll_excess",
    "object_fit", "run_pipeline", "simulation_spec", "wilks_excess"
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Conditions:
    """How far the reconstructors' probe and positions were from the truth, as given and after
    refinement, each after its gauges (:func:`ptycho.evaluation.probe_error`,
    :func:`ptycho.data.scan.position_error`).

    Attributes:
        metrics: ``probe_error_given``, ``probe_error`` (relative), ``position_error_given_rms``,
            ``position_error_rms``, ``position_error_max`` (pixels); each only where the
            experiment gave something other than the truth or the arm refined it.
        probes: ``true``, ``given`` and ``refined`` (aligned to the truth) ``(N, N)`` complex64.
        positions: ``true``, ``given`` and ``refined`` ``(M, 2)`` float64 ``(x, y)``.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    probes: dict[str, np.ndarray] = field(default_factory=dict)
    positions: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class PipelineResult:
    """What one job computed.

    Attributes:
        metrics: every scalar of the job (quality metrics, timings, sizes), by name.
        evaluation: the reconstruction on the object grid, its ground truth and the metrics'
            inputs.
        reconstruction: what the arm returned (its curves, its files, its expected counts).
        diffraction: ``(measured, expected)``, each ``(n, N, N)`` float32 photons per pixel:
            the first scored patterns and the counts the reconstruction predicts for them.
        cache_hit: whether the dataset came from the cache.
        tags: string facts for the run's tags (``xla``, ``device``, ``degenerate``, …).
        limit_maps: the Cramér–Rao bound per pixel of the scored region at the job's dose
            (``amp_variance``, ``phase_variance`` and their ``*_stderr``, each ``(h, w)``
            float32); empty without ``eval.crb``.
        datasets: the scans the job saw, for the tracker (``name``, ``digest`` = the cache
            key, ``source``, ``context`` = training or evaluation, ``profile``).
        conditions: the probes and positions given, refined and true, with their errors.
        mask: ``(N, N)`` bool the detector's measured pixels (``None``: all), for figures.
    """

    metrics: dict[str, float]
    evaluation: Evaluation
    reconstruction: Reconstruction
    diffraction: tuple[np.ndarray, np.ndarray]
    cache_hit: bool
    tags: dict[str, str] = field(default_factory=dict)
    limit_maps: dict[str, np.ndarray] = field(default_factory=dict)
    datasets: tuple[dict[str, str], ...] = ()
    conditions: Conditions = field(default_factory=Conditions)
    mask: np.ndarray | None = None

    @property
    def history(self) -> dict[str, list[float]]:
        """Per-epoch (networks) or per-iteration (iterative arms) curves, by name."""
        return dict(self.reconstruction.history)


def check_measured(config: JobConfig) -> None:
    """A measured scan's file read in full and checked against the job before any run starts:
    its counts, positions, probe, mask and geometry (:func:`ptycho.data.measured.load_measured`),
    frames large enough for N, and the dose not above the measured one.

    Raises:
        ValueError: naming the file and the field, or the dose and the measured dose.
    """
    if config.data.source != DataSource.file:
        return
    full = load_measured(config.data.path, config.N, config.data.measured)
    thinning_fraction(full.measured_dose, config.dose, len(full))


def simulation_spec(config: JobConfig) -> DataSpec:
    """What determines the job's data (and keys the dataset cache): a simulation, or a
    measured scan thinned to the job's dose (:func:`ptycho.truth_free.data_spec`)."""
    return data_spec(config)


def nll_excess(counts: np.ndarray, expected: np.ndarray, truth_expected: np.ndarray, *,
               name: str = "predicted") -> dict[str, float]:
    """How well expected counts explain the measured ones, against the true object's.

    Args:
        counts: measured photons per pixel, any shape (here ``(K, N, N)``).
        expected: the reconstruction's expected counts for the same pixels.
        truth_expected: the true object's expected counts (the simulation's ``λ``) for them.
        name: what ``expected`` are: ``predicted`` (the arm's own counts: a network's per
            group, before synchronisation and stitching; an engine's from its object) or
            ``object`` (the scored object's, :func:`object_fit`).

    Returns:
        ``<name>_nll_per_photon`` and ``truth_nll_per_photon`` (full Poisson NLL per photon,
        nats) and ``<name>_nll_excess_per_photon``, their difference. A converged
        maximum-likelihood fit explains the counts better than the truth, by about
        :func:`wilks_excess` (it also fits noise); above that it has not reached the
        likelihood's optimum (docs/physics.md §7.1).
    """
    test = float(physics.poisson_nll_per_photon(counts, expected))
    truth = float(physics.poisson_nll_per_photon(counts, truth_expected))
    return {f"{name}_nll_per_photon": test, "truth_nll_per_photon": truth,
            f"{name}_nll_excess_per_photon": test - truth}


def object_fit(operator: physics.Ptychography, obj: np.ndarray, counts: np.ndarray,
               dose: float, truth_expected: np.ndarray,
               detector: physics.Detector | None = None) -> dict[str, float]:
    """How well the scored object explains the scan's counts: :func:`nll_excess` of the
    object through the forward model, for every arm alike, with the Wilks reference beside.

    Args:
        operator: the scan under the arm's probe estimate (the given probe where it has none).
        obj: ``(H, W)`` complex64 the arm's finished object (synchronised and stitched).
        counts, truth_expected: ``(M, N, N)`` the scan's counts and the truth's ``λ``.
        dose: the job's dose: the object's scan is scaled to it as the truth's is (its
            amplitude scale is not the truth's), so a perfect reconstruction gives the truth's
            NLL exactly.
        detector: what the detector does to the object's counts (``None``: ideal).

    Returns:
        ``object_nll_per_photon``, ``object_nll_excess_per_photon``, ``truth_nll_per_photon``
        and ``wilks_nll_excess_per_photon``.
    """
    intensities = operator.intensities(np.asarray(obj, np.complex64))
    expected = physics.expected_counts(intensities, physics.dose_scale(intensities, dose))
    expected = (detector or physics.Detector()).expected(expected)
    return {**nll_excess(counts, expected.numpy(), truth_expected, name="object"),
            "wilks_nll_excess_per_photon": wilks_excess(operator, counts)}


def wilks_excess(operator: physics.Ptychography, counts: np.ndarray) -> float:
    """Where a converged maximum-likelihood fit of every object pixel sits against the truth:
    ``−p / (2 Σk)`` nats per photon (Wilks: twice the log-likelihood gain of fitting ``p``
    free real parameters is χ²_p, mean ``p``), ``p`` = 2 per object pixel the scan lights
    (illumination above 1e-6 of its peak: real and imaginary part)."""
    light = operator.illumination()
    free = 2 * int(np.count_nonzero(light > 1e-6 * light.max()))
    return -free / (2.0 * max(float(np.sum(counts, dtype=np.float64)), 1.0))


def run_pipeline(
    config: JobConfig,
    *,
    cache_dir: str | Path | None = None,
    on_progress: ProgressHook | None = None,
) -> PipelineResult:
    """Run the science of one job.

    Args:
        config: the validated job (:func:`ptycho.config.validate`).
        cache_dir: where simulated datasets are reused from and stored; ``None``: no cache.
        on_progress: called after each training epoch or iteration (e.g. to log the curves).

    Raises:
        ValueError: a geometry that cannot be evaluated (before any training), bad inputs.
        ptycho.training.TrainingDiverged: the loss became NaN or infinite.
    """
    start = time.perf_counter()
    runtime.configure_devices()  # first job of the process: GPU memory grows on demand
    runtime.reset(config.seed, str(config.train.dtype_policy))
    cache = cache_dir if config.data.cache else None
    pair, cache_hit = load_or_simulate(data_spec(config), cache)
    time_simulate = time.perf_counter() - start
    scans = (f"{len(pair.train)} patterns, trained on and scored (design reconstruct)"
             if pair.reconstructs else
             f"{len(pair.train)} train + {len(pair.test)} test patterns (design generalize)")
    log.info("data: %s, measured dose %.4g (cache %s) in %.1fs", scans,
             pair.train.measured_dose, "hit" if cache_hit else "miss", time_simulate)
    scored = pair.test
    # The region every arm is scored on; refuses a scan too sparse to stitch, before any work.
    coverage = scan_weight(scored.positions, config.N, scored.object_shape,
                           keep_fraction=config.eval.keep_fraction)
    supervision = pair.train.patches if config.model.supervised else None
    reconstruction = arm(config.model.kind).reconstruct(
        ArmInput(pair.train.scan, scored.scan, supervision), config, on_progress)
    truth_free, reference = _truth_free(config, pair, reconstruction, coverage,
                                        Path(cache) if cache else None)
    if not scored.has_truth:
        result = _score_without_truth(config, scored, reconstruction, reference, coverage)
    else:
        operator = physics.Ptychography(scored.probe, scored.positions, scored.object_shape)
        intensities = operator.intensities(scored.obj)  # the true object's |A o|², once
        scale = float(physics.dose_scale(intensities, config.dose))  # the simulation's s²
        signal = physics.expected_counts(intensities, scale)  # its λ reaching the detector
        truth_expected = scored.detector.expected(signal).numpy()  # and as measured
        result = _score(config, scored, reconstruction, coverage,
                        (operator, scale, truth_expected))
    conditions = compare_conditions(scored, reconstruction)
    result.metrics.update(measured_dose=pair.train.measured_dose, time_simulate_s=time_simulate,
                          **conditions.metrics, **truth_free, **_thinning(pair.train))
    result = replace(result, cache_hit=cache_hit, conditions=conditions,
                     datasets=_datasets(config, pair, cache_dir))
    if not scored.has_truth:
        return result
    return _with_limit(config, scored, result, scale, Path(cache) if cache else None,
                       signal.numpy())


def _thinning(data: DiffractionData) -> dict[str, float]:
    """A measured scan's full dose and the fraction of its photons the job kept."""
    if "thinning_fraction" not in data.metadata:
        return {}
    return {"full_dose": float(data.metadata["full_dose"]),
            "thinning_fraction": float(data.metadata["thinning_fraction"])}


def _truth_free(config: JobConfig, pair: DatasetPair, reconstruction: Reconstruction,
                coverage: np.ndarray, cache_dir: Path | None,
                ) -> tuple[dict[str, float], Evaluation | None]:
    """With ``eval.truth_free=on``: the half-split FRC and the agreement with the full-dose
    reference (:mod:`ptycho.truth_free`), and the evaluation against the reference."""
    if config.eval.truth_free != TruthFree.on:
        return {}, None
    metrics, _ = halfsplit_frc(config, pair, coverage)
    if config.eval.reference == "none":
        return metrics, None
    full_dose = float(pair.train.metadata.get("full_dose", config.eval.reference_dose))
    reference, hit, seconds = reference_object(config, full_dose, cache_dir)
    agreed, compared = agreement(config, reconstruction.obj, reference, coverage)
    metrics.update(agreed, reference_dose=full_dose, time_reference_s=seconds)
    log.info("truth-free: against the %s reference (%s): amplitude SSIM %.3g, FRC ½ bit %.3g "
             "of Nyquist", config.eval.reference, "cached" if hit else f"{seconds:.1f}s",
             agreed["ref_amp_ssim"], agreed["ref_amp_frc_halfbit"])
    label = f"reference ({config.eval.reference} at {full_dose:.3g} photons)"
    return metrics, replace(compared, reference_name=label)


def _first_predictions(reconstruction: Reconstruction, measured: np.ndarray) -> np.ndarray:
    """``(n, N, N)`` the arm's first prediction of each of the ``n`` patterns shown (0 where it
    made none), beside ``measured``, for the diffraction figure."""
    shown = np.zeros_like(measured)
    if reconstruction.expected is not None:
        for p in range(len(measured)):
            rows = np.flatnonzero(reconstruction.expected_patterns == p)
            if rows.size:
                shown[p] = reconstruction.expected[rows[0]]
    return shown


def _own_operator(scored: DiffractionData,
                  reconstruction: Reconstruction) -> physics.Ptychography:
    """The scan under the arm's own probe and positions (else those it was given)."""
    return physics.Ptychography(
        scored.given_probe if reconstruction.probe is None else reconstruction.probe,
        scored.given_positions if reconstruction.positions is None else reconstruction.positions,
        scored.object_shape)


def _score_without_truth(config: JobConfig, scored: DiffractionData,
                         reconstruction: Reconstruction, reference: Evaluation | None,
                         coverage: np.ndarray) -> PipelineResult:
    """A measured scan's scores: the arm's own metrics, the fit of its counts and of its object
    to the measured counts (NLL per photon; no truth to subtract), and for the figures the
    object beside the reference (else beside itself)."""
    start = time.perf_counter()
    metrics = dict(reconstruction.metrics)
    counts = scored.scan.counts
    if reconstruction.expected is not None:
        patterns = reconstruction.expected_patterns
        metrics["predicted_nll_per_photon"] = float(physics.poisson_nll_per_photon(
            counts[patterns], reconstruction.expected))
    own = _own_operator(scored, reconstruction)
    intensities = own.intensities(np.asarray(reconstruction.obj, np.complex64))
    signal = physics.expected_counts(intensities,
                                     physics.dose_scale(intensities, scored.scan.signal_dose))
    metrics["object_nll_per_photon"] = float(physics.poisson_nll_per_photon(
        counts, scored.detector.expected(signal).numpy()))
    metrics["wilks_nll_excess_per_photon"] = wilks_excess(own, counts)
    metrics["degenerate"] = 0.0  # decided against a truth: none here
    evaluation = reference
    if evaluation is None:
        evaluation = replace(evaluate(reconstruction.obj, reconstruction.obj, coverage,
                                      border=config.eval.border, phase_alignment="none",
                                      subpixel_registration=False), reference_name="itself")
    shown = _first_predictions(reconstruction, counts[: config.eval.n_diffraction])
    metrics["time_eval_s"] = time.perf_counter() - start
    return PipelineResult(metrics=metrics, evaluation=evaluation, reconstruction=reconstruction,
                          diffraction=(counts[: config.eval.n_diffraction], shown),
                          cache_hit=False, tags={**reconstruction.tags, "degenerate": "false",
                                                 "truth": "none"},
                          mask=scored.detector.mask)


def _score(config: JobConfig, scored: DiffractionData, reconstruction: Reconstruction,
           coverage: np.ndarray,
           truth: tuple[physics.Ptychography, float, np.ndarray]) -> PipelineResult:
    """The finished object against the truth: metrics (those of the arm's alternative objects
    beside, by prefix), the fit to the counts, the collapse flag and the fluence.

    ``truth``: the scored scan's operator, the simulation's scale ``s²`` and the true
    object's expected counts ``(M, N, N)`` float32 photons per pixel."""
    start = time.perf_counter()
    operator, scale, truth_expected = truth
    e = config.eval

    def scoring(image: np.ndarray) -> Evaluation:
        return evaluate(image, scored.obj, coverage, border=e.border,
                        phase_alignment=str(e.phase_alignment),
                        subpixel_registration=e.subpixel_registration)

    evaluation = scoring(reconstruction.obj)
    metrics = {**evaluation.metrics, **reconstruction.metrics,
               **{k: v for k, v in evaluation.extra.items() if np.isfinite(v)}}
    for name, image in reconstruction.alternatives.items():
        alternative = scoring(image).metrics
        metrics.update({f"{name}_{key}": alternative[key] for key in ("amp_ssim", "phase_ssim")})
    measured = scored.scan.counts[: e.n_diffraction]
    shown = _first_predictions(reconstruction, measured)
    if reconstruction.expected is not None:
        patterns = reconstruction.expected_patterns
        metrics.update(nll_excess(scored.scan.counts[patterns], reconstruction.expected,
                                  truth_expected[patterns]))
    own = _own_operator(scored, reconstruction)
    metrics.update(object_fit(own, reconstruction.obj, scored.scan.counts, config.dose,
                              truth_expected, scored.detector))
    reason = degenerate_reason(metrics)  # a collapse, not a dose effect: reports count it apart
    metrics["degenerate"] = float(reason is not None)
    tags = {**reconstruction.tags, "degenerate": "true" if reason else "false"}
    if reason:
        tags["degenerate_reason"] = reason
        log.warning("degenerate reconstruction: %s; reports count it apart from the curves",
                    reason)
    metrics.update(fluence(operator, scale * scored.measured_dose / config.dose,
                           evaluation.region))
    metrics["time_eval_s"] = time.perf_counter() - start
    return PipelineResult(metrics=metrics, evaluation=evaluation, reconstruction=reconstruction,
                          diffraction=(measured, shown), cache_hit=False, tags=tags,
                          mask=scored.detector.mask)


def _with_limit(config: JobConfig, scored: DiffractionData, result: PipelineResult,
                scale: float, cache_dir: Path | None, signal: np.ndarray) -> PipelineResult:
    """``result`` with the Cramér–Rao bound of the scored scan on its metrics (``eval.crb``):
    ``amp_mse_crb``, ``phase_mse_crb`` (and their standard errors, 0 when exact), the
    efficiencies ``*_crb_efficiency = bound / MSE`` (1: at the limit; above 1 only for a biased
    estimator or one that saw more photons than the scored scan) and ``time_crb_s``; ``scale``
    is the scan's dose scale ``s²``, ``signal`` ``(M, N, N)`` the true object's photons per
    pixel reaching the detector (its mask and background weigh each pixel's information)."""
    metrics = result.metrics
    if not config.eval.crb:
        return result
    limit, hit = load_or_estimate_limit(
        scored.obj, scored.probe, scored.positions, result.evaluation.region, cache_dir,
        phase_alignment=str(config.eval.phase_alignment), samples=config.eval.crb_samples,
        weights=scored.detector.information_weights(signal))
    bound = limit.at_scale(scale)
    for part in ("amp", "phase"):
        mse = metrics[f"{part}_mse"]
        bound[f"{part}_crb_efficiency"] = bound[f"{part}_mse_crb"] / mse if mse > 0 else np.nan
    bound["time_crb_s"] = 0.0 if hit else limit.seconds
    log.info("limit: amp_mse >= %.3g, phase_mse >= %.3g (Cramér–Rao, %s, %s); efficiency "
             "amp %.3g, phase %.3g", bound["amp_mse_crb"], bound["phase_mse_crb"], limit.method,
             "cached" if hit else f"{limit.seconds:.1f}s", bound["amp_crb_efficiency"],
             bound["phase_crb_efficiency"])
    metrics.update({k: v for k, v in bound.items() if np.isfinite(v)})
    result.tags["crb_method"] = limit.method
    return replace(result, limit_maps=limit.maps_at_scale(scale))


def compare_conditions(scored: DiffractionData, reconstruction: Reconstruction) -> Conditions:
    """:class:`Conditions` of the scored scan and what the arm made of its probe and positions."""
    found = Conditions()
    if not scored.has_truth:  # a measured scan: its probe and positions are the guesses
        return found
    refined = reconstruction.probe is not None and not np.array_equal(
        reconstruction.probe, scored.given_probe)
    if scored.probe_start is not None or refined:
        given = probe_error(scored.given_probe, scored.probe)
        found.metrics["probe_error_given"] = given
        found.probes.update(true=scored.probe, given=scored.given_probe)
        found.metrics["probe_error"] = given
        if refined:
            aligned, error = align_probe(reconstruction.probe, scored.probe)
            found.metrics["probe_error"] = error
            found.probes["refined"] = aligned
    if scored.nominal_positions is not None or reconstruction.positions is not None:
        given = position_error(scored.given_positions, scored.positions)
        found.metrics["position_error_given_rms"] = given["rms"]
        found.positions.update(true=scored.positions, given=scored.given_positions)
        final = given
        if reconstruction.positions is not None:
            final = position_error(reconstruction.positions, scored.positions)
            found.positions["refined"] = reconstruction.positions
        found.metrics["position_error_rms"] = final["rms"]
        found.metrics["position_error_max"] = final["max"]
    return found


def _datasets(config: JobConfig, pair: DatasetPair,
              cache_dir: str | Path | None) -> tuple[dict[str, str], ...]:
    """The simulated scans as dataset records: digest = the cache key (the same simulation, the
    same digest, in every run and study), source = its cache entry (or where it would be).
    Design ``reconstruct`` scores the training scan, so one dataset serves both contexts;
    ``generalize`` adds the second object's scan."""
    key = cache_key(simulation_spec(config))
    source = str(Path(cache_dir) / key) if cache_dir is not None else key
    if cache_dir is None or not config.data.cache:
        source += " (not cached: data.cache=false)"
    stem = f"sim-N{config.N}-dose{format_dose(config.dose)}-s{config.seed}"
    details = {"patterns": len(pair.train), "N": config.N, "dose": config.dose,
               "measured_dose": pair.train.measured_dose,
               "object": config.data.object.size, "design": str(config.data.design)}
    if config.data.source == DataSource.file:  # the file by its content, and how it was thinned
        stem = f"{Path(config.data.path).stem}-N{config.N}-dose{format_dose(config.dose)}"
        source = f"{config.data.path} (sha256 {config.data.digest}; thinned: {source})"
        details = {"patterns": len(pair.train), "N": config.N, "dose": config.dose,
                   "measured_dose": pair.train.measured_dose, "file": config.data.path,
                   "file_sha256": config.data.digest, **_thinning(pair.train)}
    profile = json.dumps(details)
    train = {"name": f"{stem}-scan", "digest": key, "source": source, "context": "training",
             "profile": profile}
    if pair.reconstructs:  # the same scan, scored (MLflow keeps one context per dataset name)
        return train, {**train, "name": f"{stem}-scan-scored", "context": "evaluation"}
    return train, {**train, "name": f"{stem}-second-object", "digest": f"{key}-test",
                   "source": f"{source}/test.npz", "context": "evaluation"}
