"""From a sweep's MLflow runs to the dose-response report a paper needs.

    python -m experiments.dose_response.report                      # newest sweep, default store
    python -m experiments.dose_response.report --experiment quickstart
    python -m experiments.dose_response.report --parent-run <id> --out some/folder

Writes ``runs.csv`` (every child run, with status), ``summary.csv`` (per arm and dose: mean, min,
max and count over seeds, failed runs counted separately), ``dose_efficiency.csv``, the
dose-response and reconstruction-grid figures, a self-contained ``report.html`` and a
``report.md``, and logs them all as artifacts (``report/``) of the sweep's parent run.

Runs are grouped by their logged params, never by folder names. An arm is (N, gridsize, loss,
model, data); the seeds of an arm at one dose are its spread. An iterative arm (lsqml, epie) does
not use gridsize or loss: its arm is (N, model, data), e.g. ``N32 lsqml``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape as html_escape
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.dose_response.statistics import (
    CONFIDENCE,
    MIN_REACHED,
    RATIO_RESAMPLES,
    RESAMPLES,
    crossing_dose,
    dose_ratio,
    median_ci,
)
from ptycho import viz
from ptycho.evaluation import METRIC_KEYS, degenerate_reason
from ptycho.evaluation.metrics import FLAT_CONTRAST, UNCORRELATED
from ptycho.tracking import RunRecord, Tracker, resolve_store

__all__ = [
    "AXES",
    "Report",
    "collect",
    "comparisons",
    "dose_efficiency",
    "make_report",
    "summarise",
    "summary_text",
]

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
AXES = ("N", "gridsize", "dose", "loss", "model", "data", "seed", "noise_seed")
REPLICATES = ("seed", "noise_seed")
"""The replicate axes: an arm's runs at one dose that differ only in these are its replicates."""
ARM = ("N", "gridsize", "loss", "model", "data")
ITERATIVE = ("lsqml", "epie")
"""The iterative arms (pty-chi); the dose-efficiency table compares the other arms with LSQML."""
LIMIT_METRICS = ("amp_mse_crb", "phase_mse_crb", "amp_crb_efficiency", "phase_crb_efficiency")
"""The Cramér–Rao bound of each run's test scan and the efficiencies bound / MSE (eval.crb)."""
RESOLUTION_METRICS = tuple(f"{part}_{name}" for part in ("amp", "phase") for name in (
    "frc50_nyquist", "frc17_nyquist", "frc_halfbit_nyquist", "frc_onebit_nyquist",
    "resolution_px"))
"""FRC crossings as fractions of Nyquist and the half-period resolution in object pixels: the
units that compare across N and region sizes (ring indices do not)."""
COLLAPSE_METRICS = ("amp_contrast", "amp_correlation", "phase_correlation")
"""What a degenerate (collapsed) reconstruction is decided from (ptycho.evaluation)."""
FIT_METRICS = ("nll_excess_per_photon",)
"""Poisson NLL per photon of the reconstruction's counts less the true object's: > 0 means the
point is limited by training, not by the photons (ptycho.pipeline.nll_excess)."""
EXTRA_METRICS = ("measured_dose", "time_train_s", "time_eval_s", "time_compile_s",
                 "train_patterns_per_s", *RESOLUTION_METRICS, "fluence", "fluence_p5",
                 *LIMIT_METRICS, *COLLAPSE_METRICS, *FIT_METRICS)
FLUENCE_METRICS = ("fluence", "fluence_p5")
"""Photons per object pixel² on the scored region (mean, 5th percentile): the sample's dose."""
SUMMARY_METRICS = (*METRIC_KEYS, *RESOLUTION_METRICS, "measured_dose", *FLUENCE_METRICS,
                   "time_train_s", *LIMIT_METRICS, *FIT_METRICS)
LIMIT_NOTE = (
    "Dashed black lines on the MSE panels: the Cramér–Rao bound of the test scan (the least MSE "
    "any unbiased reconstruction from those photons can have, with the probe and positions "
    "known; docs/physics.md §11). Efficiency = bound / MSE: 1 is the limit. It can exceed 1 only "
    "for a biased estimator (a network whose learned prior helps, a regularised reconstruction) "
    "or an arm that used more photons than the test scan (with data.design=generalize the PINN "
    "learned from a second object's photons too)."
)
DEFAULT_THRESHOLDS = {"amp_frc50_nyquist": 0.4, "amp_ssim": 0.8}
"""The qualities the dose-efficiency table and the comparisons ask each arm to reach: the
amplitude's FRC 0.5 crossing at 0.4 of Nyquist (a half-period of 2.5 object pixels, whatever N
and region size) and amplitude SSIM 0.8."""
METHODS = (
    "Replicates: the runs of one arm at one dose that differ only in `seed` (network weights, "
    "shuffling, object, positions) or `data.noise_seed` (the Poisson draw alone).",
    f"Curves and tables give the median over replicates with a {CONFIDENCE:.0%} bootstrap "
    f"confidence interval of the median (scipy.stats.bootstrap, BCa, {RESAMPLES} resamples; "
    "the percentile method where BCa is undefined); n is each cell's number of replicates. "
    "With fewer than 5 replicates the interval is too narrow (coverage of a nominal 95% "
    "interval measured at 0.78 for n=3, 0.91 for n=5).",
    "Dose ratios: the dose at which each arm's median curve reaches the threshold (linear "
    "interpolation in log10 dose), their ratio, and a percentile bootstrap 95% interval of "
    "its log10 from resampling every (arm, dose) cell's replicates with replacement "
    f"({RATIO_RESAMPLES} resamples); `reached` is the fraction of resamples in which both arms "
    "cross the threshold inside their measured doses. No ratio where an arm already meets it at "
    f"its lowest dose (only a bound); no interval where `reached` < {MIN_REACHED}.",
    "Known limits of these intervals: replicates are resampled as independent, but runs that "
    "share a `seed` (the dose_response study's two noise seeds per seed) share object, scan "
    "and weights, so there the intervals are too narrow (a bootstrap by seed is the fix); and "
    "the dose ratios use the non-degenerate runs, so an arm that often collapses looks better "
    "there than it is: read its collapse rate beside it.",
    f"Degenerate runs: finished runs whose reconstruction collapsed: amplitude contrast (its "
    f"standard deviation over the truth's, after alignment) below {FLAT_CONTRAST}, or Pearson "
    f"correlation with the truth below {UNCORRELATED} in both amplitude and phase. They are "
    "counted (collapse rate per cell), drawn as open triangles, and kept out of the medians and "
    "intervals. Failed runs are counted apart (red x on the dose axis).",
    "Metrics (scored region of the test scan, amplitude after a global scale, phase after "
    "removing a least-squares plane): MSE; NRMSE = ||reconstruction - truth|| / ||truth||; "
    "PSNR and SSIM (skimage.metrics, data range of the truth); the Fourier ring correlation "
    "with the truth of the Hann-apodised images, its first crossings of 0.5, 1/7 and the "
    "1/2-bit and 1-bit information thresholds (van Heel & Schatz 2005) as fractions of Nyquist "
    "(`*_nyquist`; comparable across N and region sizes, unlike ring indices), and the "
    "half-period resolution at FRC 0.5 in object pixels (`*_resolution_px`, 1 at Nyquist); "
    "the Cramér–Rao bound of the scan (docs/physics.md §11).",
    "A network's object: its predicted patches, each first given a constant phase (no "
    "diffraction pattern measures that constant; `eval.phase_sync`): by default the constants "
    "under which the stitched object best explains the measured counts (Poisson likelihood, "
    "one number per patch; the patches themselves are the network's), started from those that "
    "make overlapping patches agree; then averaged with weights |probe|^2 "
    "(`eval.stitch_weighting`). No ground truth is used (docs/physics.md §8.1); the "
    "overlap-only scores are logged beside (`overlap_sync_*_ssim`). An iterative arm's object "
    "is scored on the same region as it is.",
)
TRUTH = "ground truth"


@dataclass(frozen=True)
class Report:
    folder: Path
    html: Path
    runs: pd.DataFrame
    summary: pd.DataFrame
    efficiency: pd.DataFrame
    comparisons: pd.DataFrame


def _axis_values(record: RunRecord) -> dict[str, object]:
    params = record.params

    def number(key: str, kind: type) -> object:
        try:
            return kind(float(params[key])) if kind is int else kind(params[key])
        except (KeyError, ValueError):
            return np.nan

    model = params.get("model.kind", record.tags.get("model", ""))
    iterative = model in ITERATIVE
    return {
        "N": number("N", int),
        # recorded but unused by an iterative arm: not part of its arm
        "gridsize": np.nan if iterative else number("gridsize", int),
        "dose": number("dose", float),
        "loss": "" if iterative else params.get("loss", ""),
        "model": model,
        # What was scored: "" for data.design=reconstruct, "generalize" for an independent test
        # object; stores written before data.design (wave 1) may hold iterative arms labelled
        # by the patterns they used ("train+test").
        "data": _data_label(params, iterative),
        "seed": number("seed", int),
        # the Poisson draw's own seed; "data.noise_seed" None (the default) means the job's seed
        "noise_seed": (number("seed", int) if params.get("data.noise_seed", "None") == "None"
                       else number("data.noise_seed", int)),
    }


def _data_label(params: dict[str, str], iterative: bool) -> str:
    design = params.get("data.design", "reconstruct")
    if design != "reconstruct":
        return design
    legacy = params.get("model.data", "") if iterative else ""
    return "" if legacy == "test" else legacy


def arm_label(row: pd.Series | dict) -> str:
    """``N64 g2 poisson_nll pinn``; an iterative arm ``N64 lsqml``; ``… generalize`` when the
    scored object was not the measured one (``N64 lsqml train+test`` for a wave-1 iterative arm
    that used the training patterns too)."""
    value = row.get("data", "")
    data = "" if not isinstance(value, str) or value in ("test", "") else f" {value}"
    if row["model"] in ITERATIVE:
        return f"N{int(row['N'])} {row['model']}{data}"
    return f"N{int(row['N'])} g{int(row['gridsize'])} {row['loss']} {row['model']}{data}"


def _degenerate(record: RunRecord) -> tuple[bool, str]:
    """Whether a run's reconstruction collapsed, and why: its ``degenerate`` tag, else decided
    again from its metrics (runs logged before the tag existed)."""
    if record.status != "FINISHED":
        return False, ""
    tag = record.tags.get("degenerate")
    if tag is not None:
        return tag == "true", record.tags.get("degenerate_reason", "")
    reason = degenerate_reason(record.metrics)
    return reason is not None, reason or ""


def collect(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per run: run id, name, status, the axes (from params), whether it is
    ``degenerate`` (and why) and every metric. A run whose params were never logged (it died
    before) cannot be placed on an axis: it counts as FAILED, with that as its error."""
    rows = []
    for record in records:
        status, error = record.status, record.tags.get("error", "")
        if not record.params or "N" not in record.params or "dose" not in record.params:
            status = "FAILED" if status == "FINISHED" else status
            error = error or "no parameters logged (the job ended before logging them)"
        degenerate, reason = _degenerate(record)
        row = {"run_id": record.run_id, "name": record.name, "status": status,
               **_axis_values(record), "error": error, "degenerate": degenerate,
               "degenerate_reason": reason}
        for key in (*METRIC_KEYS, *EXTRA_METRICS):
            row[key] = record.metrics.get(key, np.nan)
        rows.append(row)
    columns = ["run_id", "name", "status", *AXES, "error", "degenerate", "degenerate_reason",
               *METRIC_KEYS, *EXTRA_METRICS]
    table = pd.DataFrame(rows, columns=columns)
    if len(table):
        table["arm"] = table.apply(
            lambda row: arm_label(row) if math.isfinite(row["N"]) else "(unknown: no params)",
            axis=1)
    else:
        table["arm"] = pd.Series(dtype=str)
    return table.sort_values(["arm", "dose", "seed"], kind="stable").reset_index(drop=True)


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
        if arm == f"N{N} lsqml":
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
    """Dose ratios, with bootstrap 95% intervals over replicates, between every two network
    arms of one N and data design that differ in exactly one setting (``loss``, ``gridsize``
    or ``model``): how many times the dose of ``reference`` ``arm`` needs to reach
    ``threshold`` in ``metric``. ``statement`` says it in words, e.g. "N64 g1 poisson_nll pinn
    reaches amp_frc50_nyquist >= 0.4 at 10^(-1.20 [-1.50, -0.90])x the dose of N64 g1 mae
    pinn"."""
    finished = runs[runs["status"] == "FINISHED"]
    arms = (finished[~finished["model"].isin(ITERATIVE)]
            .drop_duplicates("arm").set_index("arm")[list(ARM)])
    rows = []
    names = sorted(arms.index)
    for i, arm in enumerate(names):
        for reference in names[i + 1:]:
            a, b = arms.loc[arm], arms.loc[reference]
            if a["N"] != b["N"] or a["data"] != b["data"]:
                continue
            differs = [axis for axis in ("loss", "gridsize", "model") if a[axis] != b[axis]]
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


def _markdown(table: pd.DataFrame, floatfmt: str = "{:.4g}") -> str:
    """A GitHub Markdown table (pandas' to_markdown needs the extra ``tabulate`` package)."""
    if table.empty:
        return "_(none)_"

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else floatfmt.format(value)
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join([header, rule, *body])


def _image_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def _reconstructions(
    tracker: Tracker, runs: pd.DataFrame, scratch: Path
) -> dict[tuple[float, str], np.ndarray]:
    """Amplitude images of the lowest-seed FINISHED run of each (dose, arm), and the ground truth
    of each dose's first such run under the arm name ``ground truth``."""
    images: dict[tuple[float, str], np.ndarray] = {}
    finished = runs[runs["status"] == "FINISHED"].sort_values("seed")
    for (dose, arm), part in finished.groupby(["dose", "arm"]):
        run_id = part.iloc[0]["run_id"]
        try:
            path = tracker.download_artifact(run_id, "reconstruction.npz", scratch / run_id)
            with np.load(path, allow_pickle=False) as npz:
                images[(float(dose), str(arm))] = npz["amplitude"]
                images.setdefault((float(dose), TRUTH), npz["amplitude_truth"])
        except Exception as error:  # a missing artifact leaves an empty cell, said in the log
            log.warning("no reconstruction for run %s (%s)", run_id, error)
    return images


def make_report(
    *,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    experiment: str | None = None,
    out: str | Path | None = None,
    thresholds: dict[str, float] | None = None,
    reused_run_ids: Sequence[str] = (),
    x: str = "dose",
) -> Report:
    """Build the report of one sweep (default: the newest in the store) and return its paths.

    ``reused_run_ids``: FINISHED runs of earlier sweeps that this one skipped (``resume=true``);
    they belong to the study's result and are reported beside the sweep's own children.
    ``x``: the dose-response figure's axis, ``dose`` (photons per pattern) or ``fluence``
    (photons per object pixel² on the scored region).
    """
    tracking_uri, _, source = resolve_store(tracking_uri, None, PROJECT_ROOT)
    log.info("report from the store %s (%s)", tracking_uri,
             {"config": "--tracking-uri", "project": "the project's default store"}.get(
                 source, f"${source}"))
    tracker = Tracker(tracking_uri)
    if parent_run_id is None:
        found = tracker.latest_sweep(experiment)
        if found is None:
            where = f"experiment {experiment!r}" if experiment else "the store"
            raise ValueError(f"no sweep (parent run) found in {where} at {tracking_uri}")
        experiment_id, parent_run_id = found
    parent_record = tracker.get_run(parent_run_id)
    experiment_id = parent_record.experiment_id
    experiment_name = tracker.experiment_name(experiment_id)
    own = tracker.children(experiment_id, parent_run_id)
    seen = {record.run_id for record in own}
    reused = [tracker.get_run(run_id) for run_id in dict.fromkeys(reused_run_ids)
              if run_id not in seen]
    runs = collect([*own, *reused])
    summary = summarise(runs)
    thresholds = thresholds or DEFAULT_THRESHOLDS
    # A sweep whose runs all failed has no metric columns: an empty table, not a crash.
    measured = {metric: value for metric, value in thresholds.items()
                if f"{metric}_median" in summary}
    frames = [dose_efficiency(summary, metric, value, runs) for metric, value in measured.items()]
    efficiency = (pd.concat(frames, ignore_index=True) if frames
                  else pd.DataFrame(columns=EFFICIENCY_COLUMNS))
    frames = [comparisons(runs, metric, value) for metric, value in measured.items()]
    compared = (pd.concat(frames, ignore_index=True) if frames
                else pd.DataFrame(columns=COMPARISON_COLUMNS))

    folder = Path(out) if out else PROJECT_ROOT / "outputs" / "reports" / parent_run_id
    folder.mkdir(parents=True, exist_ok=True)
    runs.to_csv(folder / "runs.csv", index=False)
    summary.to_csv(folder / "summary.csv", index=False)
    efficiency.to_csv(folder / "dose_efficiency.csv", index=False)
    compared.to_csv(folder / "comparisons.csv", index=False)

    failures = summary[["arm", "dose", "n_failed"]]
    title = f"{experiment_name}: sweep {parent_record.name}"
    collapsed = runs[(runs["status"] == "FINISHED") & runs["degenerate"].astype(bool)]
    if x == "fluence" and "fluence_median" in summary:
        failures = summary[["arm", "dose", "n_failed", "fluence_median"]]
    figure = viz.dose_response_figure(summary, failures, title=title, degenerate=collapsed, x=x)
    figure.savefig(folder / "dose_response.png", dpi=100)
    doses = sorted(runs["dose"].dropna().unique().tolist())
    arms = [TRUTH, *sorted(runs["arm"].unique().tolist())]
    with tempfile.TemporaryDirectory(prefix="ptycho-report-") as scratch:
        images = _reconstructions(tracker, runs, Path(scratch))
    grid = viz.reconstruction_grid_figure(images, doses, arms, title=f"{title}: amplitude")
    grid.savefig(folder / "reconstructions.png", dpi=100)

    failed = runs[runs["status"] != "FINISHED"][["name", "status", "error"]]
    degenerate_runs = collapsed[["name", "arm", "dose", "seed", "degenerate_reason"]]
    overrides = parent_record.tags.get("sweep.overrides", "[]")
    commit = parent_record.tags.get("git_commit", "unknown")
    dirty = parent_record.tags.get("git_dirty", "unknown")
    headline = ["arm", "dose", "n_finished", "n_failed", "n_degenerate", "amp_ssim_n",
                "amp_ssim_median", "amp_ssim_ci_low", "amp_ssim_ci_high", "phase_ssim_median",
                "phase_ssim_ci_low", "phase_ssim_ci_high", "amp_frc50_nyquist_median",
                "amp_resolution_px_median", "amp_nrmse_median", "phase_frc50_nyquist_median",
                "amp_mse_median", "amp_mse_crb_median",
                "amp_crb_efficiency_median", "phase_mse_median", "phase_mse_crb_median",
                "phase_crb_efficiency_median"]
    brief = summary[[c for c in headline if c in summary]]
    sweep_line = (f"experiment `{experiment_name}`, parent run `{parent_run_id}`, "
                  f"{len(runs)} runs ({int((runs['status'] == 'FINISHED').sum())} finished, "
                  f"{len(collapsed)} of them degenerate, {len(failed)} not finished; "
                  f"{len(reused)} reused from earlier sweeps), "
                  f"git `{commit}` (dirty: {dirty}), overrides "
                  f"`{' '.join(json.loads(overrides))}`")
    statements = compared["statement"].tolist()
    markdown = [f"# Dose-response report: {experiment_name}", "", sweep_line, "",
                "## Summary (median over replicates, bootstrap 95% interval)", "",
                _markdown(brief), "", LIMIT_NOTE, "",
                "## Dose efficiency", "", _markdown(efficiency), "",
                "## Comparisons (dose ratios, bootstrap 95% intervals)", "",
                *(f"- {line}" for line in statements), "" if statements else "_(none)_", "",
                "## Degenerate runs (kept out of the medians and intervals)", "",
                _markdown(degenerate_runs), "",
                "## Failed runs", "", _markdown(failed), "",
                "## Methods", "", *(f"- {line}" for line in METHODS), "",
                "![dose response](dose_response.png)", "",
                "![reconstructions](reconstructions.png)", ""]
    (folder / "report.md").write_text("\n".join(markdown))

    def table(frame: pd.DataFrame) -> str:
        """HTML of a table; pandas escapes every cell (run names, errors, overrides)."""
        if frame.empty:
            return "<p>none</p>"
        return frame.to_html(index=False, float_format="{:.4g}".format, escape=True)

    esc = html_escape
    html = f"""<!doctype html><html><head><meta charset="utf-8">
<title>Dose-response report: {esc(experiment_name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:2px 6px}}
</style></head><body>
<h1>Dose-response report: {esc(experiment_name)}</h1><p>{esc(sweep_line)}</p>
<h2>Dose response</h2>{_image_tag(folder / 'dose_response.png')}
<h2>Reconstructions</h2>{_image_tag(folder / 'reconstructions.png')}
<h2>Summary (median over replicates, bootstrap 95% interval)</h2>{table(brief)}
<p>{esc(LIMIT_NOTE)}</p>
<h2>Dose efficiency</h2>
<p>Lowest dose at which each arm's median reaches the threshold (log-dose interpolation);
<code>vs_lsqml</code>: that dose over the dose LSQML (pty-chi, Poisson) needs at the same N, so
below 1 the arm needs fewer photons than the iterative reconstruction; its log10 with a bootstrap
95% interval over replicates. Iterative arms reconstruct the scored scan.</p>
{table(efficiency)}
<h2>Comparisons (dose ratios, bootstrap 95% intervals)</h2>
<ul>{''.join(f'<li>{esc(line)}</li>' for line in statements) or '<li>none</li>'}</ul>
<h2>Degenerate runs (kept out of the medians and intervals)</h2>{table(degenerate_runs)}
<h2>Failed runs</h2>{table(failed)}
<h2>Methods</h2><ul>{''.join(f'<li>{esc(line)}</li>' for line in METHODS)}</ul>
<h2>All runs</h2>{table(runs.drop(columns=['error']))}
</body></html>"""
    (folder / "report.html").write_text(html)
    tracker.log_artifacts(parent_run_id, folder, "report")
    return Report(folder=folder, html=folder / "report.html", runs=runs, summary=summary,
                  efficiency=efficiency, comparisons=compared)


def summary_text(summary: pd.DataFrame, metrics: Sequence[str] = ("amp_ssim", "phase_ssim")
                 ) -> str:
    """Per arm and dose: replicates, collapses and each metric's median [95% interval]."""
    lines = []
    for _, row in summary.sort_values(["arm", "dose"]).iterrows():
        cells = [f"{row['arm']:<32} dose {row['dose']:<8.3g} n {int(row['n_finished'])}"
                 f" (failed {int(row['n_failed'])}, degenerate {int(row['n_degenerate'])})"]
        for metric in metrics:
            median = row.get(f"{metric}_median", np.nan)
            low, high = row.get(f"{metric}_ci_low", np.nan), row.get(f"{metric}_ci_high", np.nan)
            interval = f" [{low:.3f}, {high:.3f}]" if np.isfinite(low) else ""
            cells.append(f"{metric} {median:.3f}{interval}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _thresholds(given: Sequence[str]) -> dict[str, float]:
    """``["amp_ssim=0.8", …]`` → ``{"amp_ssim": 0.8, …}``; the defaults when none is given."""
    if not given:
        return dict(DEFAULT_THRESHOLDS)
    # a threshold is a quality to reach from below: higher-is-better metrics only
    known = tuple(key for key in (*METRIC_KEYS, *RESOLUTION_METRICS)
                  if not key.endswith(("_mse", "_mae", "_nrmse", "_resolution_px")))
    thresholds = {}
    for item in given:
        metric, _, value = item.partition("=")
        if metric not in known:
            raise ValueError(f"--threshold {item!r}: {metric!r} is not a higher-is-better "
                             f"metric (one of {', '.join(known)})")
        try:
            thresholds[metric] = float(value)
        except ValueError:
            raise ValueError(f"--threshold {item!r}: the value must be a number") from None
    return thresholds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Dose-response report of a sweep.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--parent-run", help="the sweep's parent run id")
    source.add_argument("--experiment", help="newest sweep of this MLflow experiment")
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI if set, else "
                        "sqlite:///<project>/outputs/mlflow.db")
    parser.add_argument("--out", help="output folder (default: outputs/reports/<parent id>)")
    parser.add_argument("--x", choices=("dose", "fluence"), default="dose",
                        help="the figure's axis: photons per pattern (dose) or photons per "
                        "object pixel² on the scored region (fluence)")
    parser.add_argument("--threshold", action="append", default=[], metavar="METRIC=VALUE",
                        help="a quality for the dose-efficiency table and the comparisons, e.g. "
                        "amp_frc50_nyquist=0.4 (repeatable; default: "
                        + ", ".join(f"{k}={v:g}" for k, v in DEFAULT_THRESHOLDS.items()) + ")")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = make_report(
            tracking_uri=args.tracking_uri, parent_run_id=args.parent_run,
            experiment=args.experiment, out=args.out,
            thresholds=_thresholds(args.threshold), x=args.x,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary_text(report.summary))
    for statement in report.comparisons["statement"]:
        print(statement)
    print(f"\nreport: {report.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
