"""Analyse: a sweep's runs → per (arm, dose) statistics over replicates, the dose at which each
arm reaches a quality, and dose ratios between arms (:mod:`.statistics` does the bootstrap).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from experiments.dose_response.fetch import (
    ARM,
    FIT_METRICS,
    FLUENCE_METRICS,
    LIMIT_METRICS,
    RESOLUTION_METRICS,
)
from experiments.dose_response.statistics import crossing_dose, dose_ratio, median_ci
from ptycho.evaluation import METRIC_KEYS

__all__ = ["COMPARISON_COLUMNS", "DEFAULT_THRESHOLDS", "EFFICIENCY_COLUMNS", "SUMMARY_METRICS",
           "Analysis", "analyse", "comparisons", "dose_efficiency", "summarise"]

SUMMARY_METRICS = (*METRIC_KEYS, *RESOLUTION_METRICS, "measured_dose", *FLUENCE_METRICS,
                   "time_train_s", *LIMIT_METRICS, *FIT_METRICS)
DEFAULT_THRESHOLDS = {"amp_frc50_nyquist": 0.4, "amp_ssim": 0.8}
"""The qualities the dose-efficiency table and the comparisons ask each arm to reach: the
amplitude's FRC 0.5 crossing at 0.4 of Nyquist (a half-period of 2.5 object pixels, whatever N
and region size) and amplitude SSIM 0.8."""
REFERENCE = "lsqml"
"""The arm every other is compared with in the dose-efficiency table (``vs_lsqml``)."""


@dataclass(frozen=True)
class Analysis:
    """Per (arm, dose) statistics (:func:`summarise`), the dose each arm needs per threshold
    (:func:`dose_efficiency`) and the dose ratios between arms (:func:`comparisons`)."""

    summary: pd.DataFrame
    efficiency: pd.DataFrame
    comparisons: pd.DataFrame


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
                     else pd.DataFrame(columns=COMPARISON_COLUMNS)))


def summarise(runs: pd.DataFrame, metrics: Sequence[str] = SUMMARY_METRICS) -> pd.DataFrame:
    """Per (arm, dose), over its replicates: ``n_runs``, ``n_finished``, ``n_failed`` (runs
    that did not finish, counted apart), ``n_degenerate`` and ``collapse_rate`` (finished runs
    whose reconstruction collapsed, over the finished ones), and for each metric over the
    finished, non-degenerate runs: ``_n``, ``_median``, ``_mean``, ``_min``, ``_max`` and the
    bootstrap 95% interval of the median ``_ci_low``, ``_ci_high``
    (:func:`~experiments.dose_response.statistics.median_ci`)."""
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
        for metric in present:
            values = part[metric].to_numpy(float)
            values = values[np.isfinite(values)]
            low, high = median_ci(values)
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


def comparisons(runs: pd.DataFrame, metric: str, threshold: float) -> pd.DataFrame:
    """Dose ratios, with bootstrap 95% intervals over replicates, between every two arms of one
    N and data design that differ in exactly one setting (``loss``, ``gridsize`` or ``model``;
    a setting one of them does not use does not count): how many times the dose of
    ``reference`` ``arm`` needs to reach ``threshold`` in ``metric``. ``statement`` says it in
    words, e.g. "N64 g1 poisson_nll pinn reaches amp_frc50_nyquist >= 0.4 at 10^(-1.20 [-1.50,
    -0.90])x the dose of N64 g1 mae pinn"."""
    finished = runs[runs["status"] == "FINISHED"]
    arms = finished.drop_duplicates("arm").set_index("arm")[list(ARM)]
    rows = []
    names = sorted(arms.index)
    for i, arm in enumerate(names):
        for reference in names[i + 1:]:
            a, b = arms.loc[arm], arms.loc[reference]
            if a["N"] != b["N"] or a["data"] != b["data"]:
                continue
            differs = [axis for axis in ("loss", "gridsize", "model")
                       if _used(a[axis]) and _used(b[axis]) and a[axis] != b[axis]]
            if len(differs) != 1:
                continue
            ratio = dose_ratio(_cells(runs, arm, metric), _cells(runs, reference, metric),
                               threshold)
            rows.append({
                "arm": arm, "reference": reference, "differs_in": differs[0], "metric": metric,
                "threshold": threshold,
                "ratio": 10 ** ratio.log10_ratio if math.isfinite(ratio.log10_ratio)
                else math.nan,
                "log10_ratio": ratio.log10_ratio, "log10_low": ratio.log10_low,
                "log10_high": ratio.log10_high, "reached": ratio.reached,
                "statement": f"{arm} reaches {metric} >= {threshold:g} at {ratio.text()}x the "
                             f"dose of {reference}",
            })
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _used(value: object) -> bool:
    """Whether an axis value is set (an arm leaves the axes it does not use blank)."""
    return not (value == "" or (isinstance(value, float) and math.isnan(value)))
