"""Analyse: a sweep's runs → per (arm, dose) statistics over replicates, the dose at which each
arm reaches a quality, and dose ratios between arms (:mod:`.statistics` does the bootstrap).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from experiments.dose_response.fetch import (
    ARM,
    CONDITION_METRICS,
    FIT_METRICS,
    FLUENCE_METRICS,
    LIMIT_METRICS,
    RESOLUTION_METRICS,
    TRUTH_FREE_METRICS,
)
from experiments.dose_response.statistics import (
    MEDIAN_COVERAGE,
    DoseRatio,
    PairedDifference,
    crossing_dose,
    dose_ratio,
    interval_label,
    median_interval,
    paired_difference,
)
from ptycho.evaluation import METRIC_KEYS

__all__ = [
    "BIAS_VARIANCE_COLUMNS",
    "COMPARISON_COLUMNS",
    "CONDITION_COLUMNS",
    "DEFAULT_THRESHOLDS",
    "EFFICIENCY_COLUMNS",
    "PAIRED_COLUMNS",
    "PAIRED_METRICS",
    "SUMMARY_METRICS",
    "Analysis",
    "analyse",
    "bias_variance",
    "comparisons",
    "condition_costs",
    "dose_efficiency",
    "lower_is_better",
    "paired",
    "refinement_errors",
    "summarise",
    "truth_free_agreement",
]

SUMMARY_METRICS = (*METRIC_KEYS, *RESOLUTION_METRICS, "measured_dose", *FLUENCE_METRICS,
                   "time_train_s", *LIMIT_METRICS, *FIT_METRICS, *CONDITION_METRICS,
                   *TRUTH_FREE_METRICS)
DEFAULT_THRESHOLDS = {"amp_frc50_nyquist": 0.4, "amp_ssim": 0.8}
"""The qualities the dose-efficiency table and the comparisons ask each arm to reach: the
amplitude's FRC 0.5 crossing at 0.4 of Nyquist (a half-period of 2.5 object pixels, whatever N
and region size) and amplitude SSIM 0.8."""
PAIRED_METRICS = ("amp_ssim", "phase_ssim", "amp_nrmse", "phase_nrmse", "amp_frc50_nyquist",
                  "phase_frc50_nyquist", "amp_mse", "phase_mse")
"""The headline's metrics: structure (SSIM), error (NRMSE, MSE) and resolution (FRC50), in
amplitude and phase; which arm wins can differ between them."""
BIAS_VARIANCE_COLUMNS = ["arm", "dose", "seeds", "noise_replicates", "amp_bias2", "amp_variance",
                         "amp_mse", "phase_bias2", "phase_variance", "phase_mse"]
REFERENCE = "lsqml"
"""The arm every other is compared with in the dose-efficiency table (``vs_lsqml``)."""


@dataclass(frozen=True)
class Analysis:
    """Per (arm, dose) statistics (:func:`summarise`), the dose each arm needs per threshold
    (:func:`dose_efficiency`) and the dose ratios between arms (:func:`comparisons`)."""

    summary: pd.DataFrame
    efficiency: pd.DataFrame
    comparisons: pd.DataFrame
    paired: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=PAIRED_COLUMNS))
    bias_variance: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=BIAS_VARIANCE_COLUMNS))
    conditions: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=CONDITION_COLUMNS))
    refinement: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    truth_free: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=TRUTH_FREE_COLUMNS))


def analyse(runs: pd.DataFrame, thresholds: Mapping[str, float] | None = None) -> Analysis:
    """The analysis of a sweep's runs (:func:`~.fetch.collect`) at ``thresholds`` (metric →
    quality to reach; :data:`DEFAULT_THRESHOLDS`)."""
    summary = summarise(runs)
    # A sweep whose runs all failed has no metric columns: empty tables, not a crash.
    measured = {metric: value for metric, value in (thresholds or DEFAULT_THRESHOLDS).items()
                if f"{metric}_median" in summary}
    efficiency = [dose_efficiency(summary, metric, value, runs)
                  for metric, value in measured.items()]
    compared = [comparisons(runs, metric, value) for metric, value in measured.items()]
    return Analysis(
        summary=summary,
        efficiency=(pd.concat(efficiency, ignore_index=True) if efficiency
                    else pd.DataFrame(columns=EFFICIENCY_COLUMNS)),
        comparisons=(pd.concat(compared, ignore_index=True) if compared
                     else pd.DataFrame(columns=COMPARISON_COLUMNS)),
        paired=paired(runs),
        conditions=(condition_costs(summary, runs) if _has_conditions(runs)
                    else pd.DataFrame(columns=CONDITION_COLUMNS)),
        refinement=refinement_errors(summary) if _has_conditions(runs) else pd.DataFrame(),
        truth_free=truth_free_agreement(runs))


def _has_conditions(runs: pd.DataFrame) -> bool:
    """Whether a sweep ran any condition other than the ideal (or any refinement)."""
    conditions = runs["condition"].fillna("ideal") if "condition" in runs else None
    return bool((conditions is not None and (~conditions.isin(["ideal", "measured"])).any())
                or ("refinement" in runs and (runs["refinement"].fillna("") != "").any()))


def summarise(runs: pd.DataFrame, metrics: Sequence[str] = SUMMARY_METRICS) -> pd.DataFrame:
    """Per (arm, dose), over its replicates: ``n_runs``, ``n_finished``, ``n_failed`` (runs
    that did not finish, counted apart), ``n_degenerate`` and ``collapse_rate`` (finished runs
    whose reconstruction collapsed, over the finished ones), and for each metric over the
    finished, non-degenerate runs: ``_n``, ``_median``, ``_mean``, ``_min``, ``_max`` and the
    interval of the median ``_ci_low``, ``_ci_high``: the bootstrap 95% interval from 5
    replicates on, the range below; ``interval`` says which, with the bootstrap's measured
    coverage at that n (:func:`~experiments.dose_response.statistics.median_interval`)."""
    if runs.empty:
        return pd.DataFrame(columns=["arm", *ARM, "dose", "n_finished", "n_failed",
                                     "n_degenerate", "collapse_rate"])
    runs = runs.assign(**{axis: "" for axis in ARM if axis not in runs})  # older tables
    if "degenerate" not in runs:
        runs = runs.assign(degenerate=False)
    finished_mask = runs["status"] == "FINISHED"
    degenerate = finished_mask & runs["degenerate"].astype(bool)
    keys = ["arm", *ARM, "dose"]
    counts = runs.assign(_finished=finished_mask, _degenerate=degenerate).groupby(
        keys, dropna=False).agg(n_runs=("run_id", "count"), n_finished=("_finished", "sum"),
                                n_degenerate=("_degenerate", "sum")).reset_index()
    counts["n_failed"] = counts["n_runs"] - counts["n_finished"]
    counts["collapse_rate"] = counts["n_degenerate"] / counts["n_finished"].where(
        counts["n_finished"] > 0)
    scored = runs[finished_mask & ~degenerate]
    present = [m for m in metrics if m in scored]
    if scored.empty or not present:
        return counts
    rows = []
    for key, part in scored.groupby(keys, dropna=False):
        row = dict(zip(keys, key, strict=True))
        row["interval"] = interval_label(len(part), MEDIAN_COVERAGE)
        for metric in present:
            values = part[metric].to_numpy(float)
            values = values[np.isfinite(values)]
            low, high, _ = median_interval(values)
            row.update({
                f"{metric}_n": values.size,
                f"{metric}_median": float(np.median(values)) if values.size else np.nan,
                f"{metric}_mean": float(values.mean()) if values.size else np.nan,
                f"{metric}_min": float(values.min()) if values.size else np.nan,
                f"{metric}_max": float(values.max()) if values.size else np.nan,
                f"{metric}_ci_low": low, f"{metric}_ci_high": high,
            })
        rows.append(row)
    return counts.merge(pd.DataFrame(rows), on=keys, how="left")


EFFICIENCY_COLUMNS = ["arm", "metric", "threshold", "dose_reached", "bound", "vs_lsqml",
                      "vs_lsqml_log10", "vs_lsqml_log10_low", "vs_lsqml_log10_high",
                      "vs_lsqml_reached"]
COMPARISON_COLUMNS = ["arm", "reference", "differs_in", "metric", "threshold", "ratio",
                      "log10_ratio", "log10_low", "log10_high", "reached", "statement"]


def _cells(runs: pd.DataFrame, arm: str, metric: str) -> list[tuple[float, np.ndarray]]:
    """An arm's curve as ``(dose, replicate values)`` over its finished, non-degenerate runs."""
    part = runs[(runs["arm"] == arm) & (runs["status"] == "FINISHED")]
    if "degenerate" in part:
        part = part[~part["degenerate"].astype(bool)]
    return [(float(dose), cell[metric].to_numpy(float))
            for dose, cell in part.groupby("dose") if metric in cell]


def dose_efficiency(
    summary: pd.DataFrame, metric: str, threshold: float, runs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Lowest dose at which each arm's median ``metric`` reaches ``threshold``.

    Between two measured doses the crossing is interpolated linearly in log10(dose). An arm that
    meets the threshold at its lowest dose gets that dose with ``bound="<="``; one that never
    does gets NaN with ``bound="not reached"``. ``vs_lsqml`` is the arm's dose over the dose the
    LSQML arm of the same N needs (below 1: fewer photons than LSQML; NaN where either is
    unknown). With ``runs`` (the replicates), ``vs_lsqml_log10`` gets a bootstrap 95% interval
    (``_low``, ``_high``; ``vs_lsqml_reached``: the fraction of resamples in which both arms
    reach the threshold).
    """
    rows = []
    column = f"{metric}_median" if f"{metric}_median" in summary else f"{metric}_mean"
    lsqml: dict[int, tuple[str, float]] = {}
    for arm, part in summary.groupby("arm"):
        part = part.dropna(subset=[column]).sort_values("dose")
        dose, bound = crossing_dose(part["dose"].to_numpy(float), part[column].to_numpy(float),
                                    threshold)
        N = int(part["N"].iloc[0]) if len(part) and "N" in part else -1
        if arm == f"N{N} {REFERENCE}":
            lsqml[N] = (arm, dose)
        rows.append({"arm": arm, "metric": metric, "threshold": threshold,
                     "dose_reached": dose, "bound": bound, "N": N})
    for row in rows:
        reference_arm, reference = lsqml.get(row.pop("N"), ("", math.nan))
        row["vs_lsqml"] = (row["dose_reached"] / reference
                           if reference > 0 and not math.isnan(row["dose_reached"]) else math.nan)
        row.update(vs_lsqml_log10=math.nan, vs_lsqml_log10_low=math.nan,
                   vs_lsqml_log10_high=math.nan, vs_lsqml_reached=math.nan)
        if runs is not None and reference_arm and row["arm"] != reference_arm:
            ratio = dose_ratio(_cells(runs, row["arm"], metric),
                               _cells(runs, reference_arm, metric), threshold)
            row.update(vs_lsqml_log10=ratio.log10_ratio, vs_lsqml_log10_low=ratio.log10_low,
                       vs_lsqml_log10_high=ratio.log10_high, vs_lsqml_reached=ratio.reached)
    return pd.DataFrame(rows, columns=EFFICIENCY_COLUMNS)


def _ratio_statement(arm: str, reference: str, metric: str, threshold: float,
                     ratio: DoseRatio) -> str:
    """One comparison in words, the ratio first and why an interval or a ratio is missing last."""
    text = ratio.text()
    if not math.isfinite(ratio.log10_ratio):
        return f"{arm} against {reference} on {metric} >= {threshold:g}: {text}"
    value, _, why = text.partition(" (no interval")
    why = f" (no interval{why}" if why else ""
    return f"{arm} reaches {metric} >= {threshold:g} at {value}x the dose of {reference}{why}"


def comparisons(runs: pd.DataFrame, metric: str, threshold: float) -> pd.DataFrame:
    """Dose ratios, with bootstrap 95% intervals over replicates, between every two arms of one
    N and data design that differ in exactly one setting (``loss``, ``gridsize`` or ``model``;
    a setting one of them does not use does not count): how many times the dose of
    ``reference`` ``arm`` needs to reach ``threshold`` in ``metric``. ``statement`` says it in
    words, e.g. "N64 g1 poisson_nll pinn reaches amp_frc50_nyquist >= 0.4 at 10^(-1.20 [-1.50,
    -0.90])x the dose of N64 g1 mae pinn"."""
    rows = []
    for arm, reference, differs in _arm_pairs(runs):
        ratio = dose_ratio(_cells(runs, arm, metric), _cells(runs, reference, metric),
                           threshold)
        rows.append({
            "arm": arm, "reference": reference, "differs_in": differs, "metric": metric,
            "threshold": threshold,
            "ratio": 10 ** ratio.log10_ratio if math.isfinite(ratio.log10_ratio)
            else math.nan,
            "log10_ratio": ratio.log10_ratio, "log10_low": ratio.log10_low,
            "log10_high": ratio.log10_high, "reached": ratio.reached,
            "statement": _ratio_statement(arm, reference, metric, threshold, ratio),
        })
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _arm_pairs(runs: pd.DataFrame) -> Iterator[tuple[str, str, str]]:
    """``(arm, reference, the setting they differ in)`` for every two arms with finished runs,
    of one N and data design, that differ in exactly one setting both use."""
    finished = runs[runs["status"] == "FINISHED"]
    if finished.empty:
        return
    finished = finished.assign(**{axis: "" for axis in ARM if axis not in finished})  # older
    arms = finished.drop_duplicates("arm").set_index("arm")[list(ARM)]
    names = sorted(arms.index)
    for i, arm in enumerate(names):
        for reference in names[i + 1:]:
            a, b = arms.loc[arm], arms.loc[reference]
            if any(a[key] != b[key] for key in ("N", "data", "object", "simulator", "tuning",
                                                "condition", "refinement")):
                continue  # one scan and one protocol: tuned and held-out runs never paired
            differs = [axis for axis in ("loss", "gridsize", "model")
                       if _used(a[axis]) and _used(b[axis]) and a[axis] != b[axis]]
            if len(differs) == 1:
                yield arm, reference, differs[0]


PAIRED_COLUMNS = ["arm", "reference", "differs_in", "dose", "metric", "better", "seeds",
                  "difference", "low", "high", "interval", "arm_wins", "reference_wins", "ties",
                  "arm_failed", "reference_failed", "sign_p", "wilcoxon_p", "winner",
                  "statement"]


def lower_is_better(metric: str) -> bool:
    """Errors and resolution lengths: lower is better; SSIM, FRC crossings, PSNR: higher."""
    return metric.endswith(("_mse", "_mae", "_nrmse", "_resolution_px", "_per_photon"))


def _by_seed(runs: pd.DataFrame, arm: str, dose: float, metric: str) -> dict[int, float]:
    """An arm's ``metric`` at ``dose`` by seed: the mean over the seed's replicates (its noise
    seeds), NaN where any of them failed or collapsed (a failure is not left out)."""
    part = runs[(runs["arm"] == arm) & (runs["dose"] == dose)]
    scored = (part["status"] == "FINISHED") & ~part["degenerate"].astype(bool)
    values = part[metric].where(scored) if metric in part else pd.Series(np.nan, part.index)
    by_seed = values.groupby(part["seed"]).agg(lambda v: v.mean() if v.notna().all()
                                                else np.nan)
    return {int(seed): float(value) for seed, value in by_seed.items()}


def paired(runs: pd.DataFrame, metrics: Sequence[str] = PAIRED_METRICS) -> pd.DataFrame:
    """Paired differences ``arm − reference`` per dose and metric over the seeds both ran, for
    every two arms :func:`comparisons` compares: runs that share a seed share its scan, object
    and weights, so the seed is the unit (its noise-seed replicates averaged), and the
    bootstrap resamples whole seeds
    (:func:`~experiments.dose_response.statistics.paired_difference`). A failed or degenerate
    run loses its seed. ``winner``: the arm better on more seeds with sign-test p < 0.05, else
    empty; ``statement`` says it in one line."""
    if runs.empty:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    runs = runs.assign(degenerate=runs["degenerate"] if "degenerate" in runs else False)
    rows = []
    for arm, reference, differs in _arm_pairs(runs):
        doses = sorted(set(runs.loc[runs["arm"] == arm, "dose"])
                       & set(runs.loc[runs["arm"] == reference, "dose"]))
        for dose in doses:
            for metric in (m for m in metrics if m in runs):
                lower = lower_is_better(metric)
                result = paired_difference(_by_seed(runs, arm, dose, metric),
                                           _by_seed(runs, reference, dose, metric),
                                           higher_is_better=not lower)
                winner = {"a": arm, "b": reference}.get(result.winner, "")
                rows.append({
                    "arm": arm, "reference": reference, "differs_in": differs, "dose": dose,
                    "metric": metric, "better": "lower" if lower else "higher",
                    "seeds": result.n, "difference": result.mean, "low": result.low,
                    "high": result.high, "interval": result.label, "arm_wins": result.a_wins,
                    "reference_wins": result.b_wins, "ties": result.ties,
                    "arm_failed": result.a_failed, "reference_failed": result.b_failed,
                    "sign_p": result.sign_p, "wilcoxon_p": result.wilcoxon_p, "winner": winner,
                    "statement": _paired_statement(arm, reference, dose, metric, result, winner),
                })
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _paired_statement(arm: str, reference: str, dose: float, metric: str,
                      result: PairedDifference, winner: str) -> str:
    decided = result.a_wins + result.b_wins
    verdict = f"{winner} better" if winner else "no consistent winner"
    return (f"dose {dose:g}, {metric}: {arm} − {reference} = {result.mean:+.4g} "
            f"[{result.low:.4g}, {result.high:.4g}] ({result.label}, {result.n} seeds); "
            f"{arm} better on {result.a_wins} of {decided} (sign p={result.sign_p:.3g}, "
            f"Wilcoxon p={result.wilcoxon_p:.3g}): {verdict}")


def _used(value: object) -> bool:
    """Whether an axis value is set (an arm leaves the axes it does not use blank)."""
    return not (value == "" or (isinstance(value, float) and math.isnan(value)))


def bias_variance(groups: Mapping[tuple[str, float, int], Sequence[Mapping[str, np.ndarray]]]
                  ) -> pd.DataFrame:
    """Each arm's error split into bias² and variance over noise seeds, per dose.

    For one seed (one object, scan and set of weights), ``K`` reconstructions from independent
    Poisson draws: per pixel their mean ``m`` and unbiased variance ``v``; the variance term is
    the mean of ``v`` over the region, the bias² term the mean of ``(m − truth)²`` less ``v/K``
    (the mean's own noise), so bias² + variance is the mean MSE of the ``K`` runs. Averaged over
    the seeds of each (arm, dose). The prior of a network or a regularised engine trades
    variance for bias; an unbiased estimator has bias² ≈ 0 and variance ≥ the Cramér–Rao bound.

    Args:
        groups: ``(arm, dose, seed) →`` the runs' aligned ``amplitude``, ``phase`` and their
            ``amplitude_truth``, ``phase_truth`` arrays (:func:`~.fetch.noise_replicates`).
    """
    rows: dict[tuple[str, float], list[dict[str, float]]] = {}
    for (arm, dose, _seed), runs in groups.items():
        split: dict[str, float] = {"noise_replicates": float(len(runs))}
        for part in ("amp", "phase"):
            key = "amplitude" if part == "amp" else "phase"
            images = np.stack([np.asarray(run[key], np.float64) for run in runs])
            truth = np.asarray(runs[0][f"{key}_truth"], np.float64)
            variance = images.var(axis=0, ddof=1)
            bias2 = (images.mean(axis=0) - truth) ** 2 - variance / len(runs)
            split[f"{part}_bias2"] = float(bias2.mean())
            split[f"{part}_variance"] = float(variance.mean())
            split[f"{part}_mse"] = float(((images - truth) ** 2).mean())
        rows.setdefault((arm, dose), []).append(split)
    table = [{"arm": arm, "dose": dose, "seeds": len(splits),
              **{key: float(np.mean([s[key] for s in splits])) for key in splits[0]}}
             for (arm, dose), splits in sorted(rows.items())]
    return pd.DataFrame(table, columns=BIAS_VARIANCE_COLUMNS)


CONDITION_COLUMNS = ["base", "refinement", "condition", "metric", "reference_dose",
                     "reference_quality", "values", "vs_ideal", "dose_needed", "bound",
                     "dose_cost", "log10_cost", "log10_low", "log10_high", "statement"]
CONDITION_METRIC = "amp_frc50_nyquist"
"""The quality a condition's dose cost is measured in (the issue's amplitude FRC50)."""


def _base(arm: str) -> str:
    """An arm label without its condition and refinement (``… · probe perturbed · refined``)."""
    return arm.split(" · ")[0]


def condition_costs(summary: pd.DataFrame, runs: pd.DataFrame,
                    metric: str = CONDITION_METRIC) -> pd.DataFrame:
    """What each experimental condition costs each arm, against the same arm (same refinement)
    under ideal conditions: one row per (arm, refinement, condition).

    The reference quality is the ideal arm's median ``metric`` at the sweep's middle dose;
    ``dose_needed`` is where the condition's median curve reaches it (log-dose interpolation,
    :func:`~.statistics.crossing_dose`), ``dose_cost`` that over the dose the ideal needs (1
    for the ideal itself; with replicates a bootstrap 95% interval of its log10), ``bound``
    ``not reached`` where the condition never reaches it within the doses run (the cost is then
    above the highest dose over the reference dose). ``values`` and ``vs_ideal`` list the
    median at each dose and its difference from the ideal's.
    """
    column = f"{metric}_median"
    if summary.empty or column not in summary or "condition" not in summary:
        return pd.DataFrame(columns=CONDITION_COLUMNS)
    table = summary.assign(base=summary["arm"].map(_base))
    doses = sorted(table["dose"].dropna().unique().tolist())
    reference_dose = doses[len(doses) // 2] if doses else math.nan
    rows = []
    for (base, refinement), part in table.groupby(["base", "refinement"], dropna=False):
        ideal = part[part["condition"].isin(["ideal", ""])]
        if ideal.empty:
            continue
        ideal_arm = str(ideal["arm"].iloc[0])
        ideal_curve = ideal.set_index("dose")[column]
        quality = float(ideal_curve.get(reference_dose, math.nan))
        for condition, rows_of in part.groupby("condition", sort=False):
            arm = str(rows_of["arm"].iloc[0])
            curve = rows_of.sort_values("dose").set_index("dose")[column]
            needed, bound = crossing_dose(curve.index.to_numpy(float), curve.to_numpy(float),
                                          quality)
            ratio = dose_ratio(_cells(runs, arm, metric), _cells(runs, ideal_arm, metric),
                               quality)
            cost = 10 ** ratio.log10_ratio if math.isfinite(ratio.log10_ratio) else math.nan
            if arm == ideal_arm:
                cost, bound = 1.0, "="
            values = "; ".join(f"{dose:g}: {value:.3f}" for dose, value in curve.items())
            versus = "; ".join(f"{dose:g}: {value - ideal_curve.get(dose, math.nan):+.3f}"
                               for dose, value in curve.items())
            rows.append({
                "base": base, "refinement": refinement or "none", "condition": condition or
                "ideal", "metric": metric, "reference_dose": reference_dose,
                "reference_quality": quality, "values": values, "vs_ideal": versus,
                "dose_needed": needed, "bound": bound, "dose_cost": cost,
                "log10_cost": ratio.log10_ratio, "log10_low": ratio.log10_low,
                "log10_high": ratio.log10_high,
                "statement": _cost_statement(base, refinement, str(condition), metric, quality,
                                             reference_dose, bound, cost, ratio, doses)})
    return pd.DataFrame(rows, columns=CONDITION_COLUMNS)


def _cost_statement(base: str, refinement: str, condition: str, metric: str, quality: float,
                    reference_dose: float, bound: str, cost: float, ratio: DoseRatio,
                    doses: Sequence[float]) -> str:
    who = f"{base}{f' ({refinement})' if refinement and refinement != 'none' else ''}"
    target = f"{metric} {quality:.3f} (ideal at {reference_dose:g})"
    if condition in ("ideal", ""):
        return f"{who}: reference {target}"
    if bound == "not reached":
        return (f"{who} under {condition}: does not reach {target} by {max(doses):g}: costs "
                f"more than {max(doses) / reference_dose:g}x the dose")
    if not math.isfinite(cost):
        return f"{who} under {condition}: reaches {target} already at the lowest dose"
    return f"{who} under {condition}: reaches {target} at {ratio.text()}x the ideal's dose"


def refinement_errors(summary: pd.DataFrame) -> pd.DataFrame:
    """Per arm, refinement, condition and dose: the median probe and position errors as given
    and as the arm left them (after their gauges); only the conditions and refinements that
    have them (an ideal, unrefined arm has none)."""
    columns = [f"{metric}_median" for metric in CONDITION_METRICS if f"{metric}_median" in summary]
    if summary.empty or not columns or "condition" not in summary:
        return pd.DataFrame(columns=["base", "refinement", "condition", "dose"])
    table = summary.assign(base=summary["arm"].map(_base),
                           refinement=summary["refinement"].replace("", "none"))
    table = table.dropna(subset=columns, how="all")
    table = table[["base", "refinement", "condition", "dose", *columns]]
    table.columns = [column.removesuffix("_median") for column in table.columns]
    return table.sort_values(["base", "refinement", "condition", "dose"]).reset_index(drop=True)


TRUTH_FREE_PAIRS = (
    ("amp_frc_halfbit_nyquist", "halfsplit_amp_frc_halfbit"),
    ("phase_frc_halfbit_nyquist", "halfsplit_phase_frc_halfbit"),
    ("amp_frc50_nyquist", "ref_amp_frc50"),
    ("amp_ssim", "ref_amp_ssim"),
    ("phase_ssim", "ref_phase_ssim"),
)
"""Each truth metric and the truth-free metric that stands in for it on a measured scan."""
TRUTH_FREE_COLUMNS = ["arm", "truth_metric", "truth_free_metric", "runs", "pearson", "spearman",
                      "mean_difference", "statement"]


def truth_free_agreement(runs: pd.DataFrame) -> pd.DataFrame:
    """How well the truth-free metrics track the truth's across a sweep's runs (doses and
    replicates), per arm and over all arms: Pearson's and Spearman's correlation and the mean
    of truth-free − truth, over the finished runs that have both. Only runs with a truth and
    ``eval.truth_free`` have both (a simulated scan, or an exported one studied as measured)."""
    rows = []
    if runs.empty or "status" not in runs:
        return pd.DataFrame(columns=TRUTH_FREE_COLUMNS)
    finished = runs[runs["status"] == "FINISHED"]
    groups = [(arm, table) for arm, table in finished.groupby("arm", sort=True)]
    groups.append(("all arms", finished))
    for arm, table in groups:
        for truth, free in TRUTH_FREE_PAIRS:
            if truth not in table or free not in table:
                continue
            both = table[[truth, free]].apply(pd.to_numeric, errors="coerce").dropna()
            if len(both) < 3:
                continue
            pearson = float(np.corrcoef(both[truth], both[free])[0, 1])
            spearman = float(both[truth].rank().corr(both[free].rank()))
            difference = float((both[free] - both[truth]).mean())
            rows.append({"arm": arm, "truth_metric": truth, "truth_free_metric": free,
                         "runs": len(both), "pearson": pearson, "spearman": spearman,
                         "mean_difference": difference,
                         "statement": f"{arm}: {free} tracks {truth} with r = {pearson:.2f} "
                                      f"(Spearman {spearman:.2f}) over {len(both)} runs, "
                                      f"{difference:+.3g} on average"})
    return pd.DataFrame(rows, columns=TRUTH_FREE_COLUMNS)
