"""Render: a sweep's analysis → ``runs.csv``, ``summary.csv``, ``dose_efficiency.csv``,
``comparisons.csv``, the dose-response and reconstruction-grid figures, a self-contained
``report.html`` and a ``report.md``, each with the Methods they were made by."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.dose_response.analyse import Analysis
from experiments.dose_response.fetch import TRUTH_FREE_METRICS, Sweep, truth_labels
from experiments.dose_response.statistics import (
    CONFIDENCE,
    MIN_BOOTSTRAP,
    MIN_REACHED,
    RATIO_RESAMPLES,
    RESAMPLES,
)
from ptycho import viz
from ptycho.evaluation.metrics import FLAT_CONTRAST, UNCORRELATED

__all__ = ["METHODS", "paired_table", "paired_text", "render", "summary_text"]

LIMIT_NOTE = (
    "Dashed black lines on the MSE panels: the Cramér–Rao bound of the test scan (the least MSE "
    "any unbiased reconstruction from those photons can have, with the probe and positions "
    "known; docs/physics.md §11). Efficiency = bound / MSE: 1 is the limit. It can exceed 1 only "
    "for a biased estimator (a network whose learned prior helps, a regularised reconstruction) "
    "or an arm that used more photons than the test scan (with data.design=generalize the PINN "
    "learned from a second object's photons too)."
)
METHODS = (
    "Replicates: the runs of one arm at one dose that differ only in `seed` (network weights, "
    "shuffling, object, positions) or `data.noise_seed` (the Poisson draw alone).",
    f"Curves and tables give the median over replicates with an interval (column `interval`): "
    f"from {MIN_BOOTSTRAP} replicates on a {CONFIDENCE:.0%} bootstrap confidence interval of "
    f"the median (scipy.stats.bootstrap, BCa, {RESAMPLES} resamples; the percentile method "
    "where BCa is undefined), labelled with the coverage it was measured to have at that n "
    "(bench/interval_coverage.py); below that the range of the replicates, called a range (a "
    "bootstrap of 2 values is their range and covers the median about half the time).",
    "Paired comparisons: two arms that ran the same seeds saw the same scan, object and "
    "weights, so each seed is one pair (its noise-seed replicates averaged) and the difference "
    "is taken per seed: its mean, a bootstrap interval that resamples whole seeds (from "
    f"{MIN_BOOTSTRAP} seeds on, labelled with its measured coverage; the range below), the "
    "two-sided sign test of the seeds each arm is better on and Wilcoxon's exact signed-rank "
    "test. A failed or degenerate run loses its seed (ranked as the largest loss), it does "
    "not disappear. `winner`: the arm better on more seeds with sign-test p < 0.05; with n "
    "seeds the smallest possible p is 2^(1-n) (0.5 at 2, 0.0625 at 5, 0.031 at 6).",
    "Dose ratios: the dose at which each arm's median curve reaches the threshold (linear "
    "interpolation in log10 dose), their ratio, and a percentile bootstrap 95% interval of "
    "its log10 from resampling every (arm, dose) cell's replicates with replacement "
    f"({RATIO_RESAMPLES} resamples); `reached` is the fraction of resamples in which both arms "
    "cross the threshold inside their measured doses. No ratio where an arm already meets it at "
    f"its lowest dose (only a bound); no interval where `reached` < {MIN_REACHED}.",
    "Known limits: the medians' and dose ratios' intervals resample replicates as independent, "
    "but runs that share a `seed` (the dose_response study's two noise seeds per seed) share "
    "object, scan and weights, so there they are too narrow (the paired comparisons resample "
    "by seed); and the dose ratios use the non-degenerate runs, so an arm that often collapses "
    "looks better there than it is: read its collapse rate beside it, and the paired table.",
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
    "make overlapping patches agree (a job of fewer than 10 training epochs stops at those: "
    "`eval.phase_sync=auto`); then averaged with weights |probe|^2 "
    "(`eval.stitch_weighting`). No ground truth is used (docs/physics.md §8.1); the "
    "overlap-only scores are logged beside (`overlap_sync_*_ssim`). An iterative arm's object "
    "is scored on the same region as it is.",
)
HEADLINE = ["arm", "dose", "n_finished", "n_failed", "n_degenerate", "interval", "amp_ssim_n",
            "amp_ssim_median", "amp_ssim_ci_low", "amp_ssim_ci_high", "phase_ssim_median",
            "phase_ssim_ci_low", "phase_ssim_ci_high", "amp_frc50_nyquist_median",
            "amp_resolution_px_median", "amp_nrmse_median", "phase_frc50_nyquist_median",
            "amp_mse_median", "amp_mse_crb_median", "amp_crb_efficiency_median",
            "phase_mse_median", "phase_mse_crb_median", "phase_crb_efficiency_median"]
SUMMARY_NOTE = ("median over replicates; interval: a bootstrap 95% interval from "
                f"{MIN_BOOTSTRAP} replicates on, with its measured coverage, else the range")
PAIRED_NOTE = ("arm − reference per seed, the seeds' mean with a seed-level interval; wins "
               "counted per seed, failures as losses; sign and Wilcoxon tests")
BIAS_VARIANCE_NOTE = ("per arm and dose, over the seeds whose object, scan and weights were "
                      "reconstructed from several noise seeds: MSE = bias² + variance; empty "
                      "without data.noise_seed replicates")
CONDITIONS_NOTE = (
    "each arm under each experimental condition against the same arm, same refinement, under "
    "ideal conditions: the median amplitude FRC50 per dose, its difference from the ideal's, and "
    "the dose the condition needs to reach the quality the ideal reaches at the middle dose, "
    "over the dose the ideal needs (dose_cost; log10 with a bootstrap 95% interval over "
    "replicates)")
ERRORS_NOTE = (
    "medians per dose: the relative error of the probe the arm was given and of the probe it "
    "ended with, after a complex constant, a phase ramp and a translation; the RMS distance of "
    "the given and the final positions from the true ones, after their mean difference (pixels)")
TRUTH_FREE_NOTE = (
    "truth-free metrics (eval.truth_free): halfsplit_* is the FRC of two reconstructions of "
    "interleaved halves of the scan at the ½-bit threshold (fraction of Nyquist), ref_* the "
    "agreement with one reference reconstruction of the full-dose data; every other quality "
    "metric needs the ground truth and is absent (not zero) for a measured scan. The table: "
    "how well each tracks its truth metric over the runs that have both (Pearson r, Spearman "
    "rho, mean truth-free − truth)")
EFFICIENCY_NOTE = (
    "Lowest dose at which each arm's median reaches the threshold (log-dose interpolation); "
    "vs_lsqml: that dose over the dose LSQML (pty-chi, Poisson) needs at the same N, so below 1 "
    "the arm needs fewer photons than the iterative reconstruction; its log10 with a bootstrap "
    "95% interval over replicates. Iterative arms reconstruct the scored scan.")


def render(folder: Path, sweep: Sweep, analysis: Analysis,
           images: dict[tuple[float, str], np.ndarray], *, x: str = "dose") -> Path:
    """Write the report's files into ``folder``; returns the path of ``report.html``."""
    runs, summary = sweep.runs, analysis.summary
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in (("runs", runs), ("summary", summary),
                        ("dose_efficiency", analysis.efficiency),
                        ("comparisons", analysis.comparisons), ("paired", analysis.paired),
                        ("bias_variance", analysis.bias_variance),
                        ("conditions", analysis.conditions),
                        ("refinement_errors", analysis.refinement),
                        ("truth_free", analysis.truth_free)):
        table.to_csv(folder / f"{name}.csv", index=False)
    title = f"{sweep.experiment}: sweep {sweep.parent.name}"
    collapsed = runs[(runs["status"] == "FINISHED") & runs["degenerate"].astype(bool)]
    failures = summary[["arm", "dose", "n_failed"]]
    if x == "fluence" and "fluence_median" in summary:
        failures = summary[["arm", "dose", "n_failed", "fluence_median"]]
    viz.dose_response_figure(summary, failures, title=title, degenerate=collapsed,
                             x=x).savefig(folder / "dose_response.png", dpi=100)
    doses = sorted(runs["dose"].dropna().unique().tolist())
    arms = [*truth_labels(runs), *sorted(runs["arm"].unique().tolist())]
    viz.reconstruction_grid_figure(images, doses, arms, title=f"{title}: amplitude").savefig(
        folder / "reconstructions.png", dpi=100)
    if not analysis.conditions.empty:
        viz.conditions_figure(summary, title=title).savefig(folder / "conditions.png", dpi=100)
    if _has_truth_free(summary):
        viz.truth_free_figure(summary, title=f"{title}: truth-free (dashed) and truth (solid)"
                              ).savefig(folder / "truth_free.png", dpi=100)
    if not analysis.bias_variance.empty:
        viz.bias_variance_figure(analysis.bias_variance, title=title).savefig(
            folder / "bias_variance.png", dpi=100)
    sections = _sections(sweep, analysis, collapsed)
    (folder / "report.md").write_text(_markdown_report(sweep.experiment, sections))
    (folder / "report.html").write_text(_html_report(folder, sweep.experiment, sections))
    return folder / "report.html"


def _sections(sweep: Sweep, analysis: Analysis, collapsed: pd.DataFrame) -> dict[str, object]:
    """The report's parts, shared by its Markdown and its HTML."""
    runs, parent = sweep.runs, sweep.parent
    failed = runs[runs["status"] != "FINISHED"][["name", "status", "error"]]
    overrides = json.loads(parent.tags.get("sweep.overrides", "[]"))
    line = (f"experiment `{sweep.experiment}`, parent run `{parent.run_id}`, {len(runs)} runs "
            f"({int((runs['status'] == 'FINISHED').sum())} finished, {len(collapsed)} of them "
            f"degenerate, {len(failed)} not finished; {sweep.reused} reused from earlier "
            f"sweeps), git `{parent.tags.get('git_commit', 'unknown')}` (dirty: "
            f"{parent.tags.get('git_dirty', 'unknown')}), overrides `{' '.join(overrides)}`")
    return {"line": line, "brief": analysis.summary[[c for c in HEADLINE
                                                     if c in analysis.summary]],
            "efficiency": analysis.efficiency, "paired": paired_table(analysis.paired),
            "bias_variance": analysis.bias_variance,
            "conditions": analysis.conditions.drop(columns=["statement"]),
            "condition_statements": analysis.conditions["statement"].tolist(),
            "refinement": analysis.refinement,
            "truth_free": analysis.truth_free.drop(columns=["statement"]),
            "truth_free_statements": analysis.truth_free["statement"].tolist(),
            "has_truth_free": _has_truth_free(analysis.summary),
            "statements": analysis.comparisons["statement"].tolist(), "failed": failed,
            "degenerate": collapsed[["name", "arm", "dose", "seed", "degenerate_reason"]],
            "runs": runs.drop(columns=["error"])}


def _markdown_report(experiment: str, parts: dict) -> str:
    statements = parts["statements"]
    return "\n".join([
        f"# Dose-response report: {experiment}", "", parts["line"], "",
        f"## Summary ({SUMMARY_NOTE})", "",
        _markdown(parts["brief"]), "", LIMIT_NOTE, "",
        f"## Paired comparisons ({PAIRED_NOTE})", "", _markdown(parts["paired"]), "",
        f"## Bias and variance over noise seeds ({BIAS_VARIANCE_NOTE})", "",
        _markdown(parts["bias_variance"]), "",
        *_conditions_markdown(parts), *_truth_free_markdown(parts),
        "## Dose efficiency", "", _markdown(parts["efficiency"]), "",
        "## Comparisons (dose ratios, bootstrap 95% intervals)", "",
        *(f"- {line}" for line in statements), "" if statements else "_(none)_", "",
        "## Degenerate runs (kept out of the medians and intervals)", "",
        _markdown(parts["degenerate"]), "", "## Failed runs", "", _markdown(parts["failed"]),
        "", "## Methods", "", *(f"- {line}" for line in METHODS), "",
        "![dose response](dose_response.png)", "", "![reconstructions](reconstructions.png)",
        ""])


def _conditions_markdown(parts: dict) -> list[str]:
    """The conditions' section (a sweep over ``condition``): their costs, in a table and words."""
    if parts["conditions"].empty:
        return []
    return [f"## Conditions ({CONDITIONS_NOTE})", "", _markdown(parts["conditions"]), "",
            *(f"- {line}" for line in parts["condition_statements"]), "",
            "![conditions](conditions.png)", "", f"### Probe and position errors ({ERRORS_NOTE})",
            "", _markdown(parts["refinement"]), ""]


def _has_truth_free(summary: pd.DataFrame) -> bool:
    """Whether any run scored itself without the truth (``eval.truth_free``)."""
    columns = [f"{name}_median" for name in TRUTH_FREE_METRICS[:12]]
    return any(column in summary and summary[column].notna().any() for column in columns)


def _truth_free_markdown(parts: dict) -> list[str]:
    """The truth-free section: what the metrics are, how they track the truth's, the figure."""
    if not parts["has_truth_free"]:
        return []
    return [f"## Without the ground truth ({TRUTH_FREE_NOTE})", "",
            _markdown(parts["truth_free"]), "",
            *(f"- {line}" for line in parts["truth_free_statements"]), "",
            "![truth-free metrics](truth_free.png)", ""]


def _html_report(folder: Path, experiment: str, parts: dict) -> str:
    def table(frame: pd.DataFrame) -> str:
        """HTML of a table; pandas escapes every cell (run names, errors, overrides)."""
        if frame.empty:
            return "<p>none</p>"
        return frame.to_html(index=False, float_format="{:.4g}".format, escape=True)

    items = "".join(f"<li>{escape(line)}</li>" for line in parts["statements"])
    bias_figure = (_image_tag(folder / "bias_variance.png")
                   if (folder / "bias_variance.png").exists() else "")
    methods = "".join(f"<li>{escape(line)}</li>" for line in METHODS)
    conditions = "" if parts["conditions"].empty else (
        f"<h2>Conditions ({escape(CONDITIONS_NOTE)})</h2>"
        f"{_image_tag(folder / 'conditions.png')}{table(parts['conditions'])}<ul>"
        + "".join(f"<li>{escape(line)}</li>" for line in parts["condition_statements"])
        + f"</ul><h3>Probe and position errors ({escape(ERRORS_NOTE)})</h3>"
        + table(parts["refinement"]))
    truth_free = "" if not parts["has_truth_free"] else (
        f"<h2>Without the ground truth ({escape(TRUTH_FREE_NOTE)})</h2>"
        f"{_image_tag(folder / 'truth_free.png')}{table(parts['truth_free'])}<ul>"
        + "".join(f"<li>{escape(line)}</li>" for line in parts["truth_free_statements"])
        + "</ul>")
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Dose-response report: {escape(experiment)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:2px 6px}}
</style></head><body>
<h1>Dose-response report: {escape(experiment)}</h1><p>{escape(parts["line"])}</p>
<h2>Dose response</h2>{_image_tag(folder / 'dose_response.png')}
<h2>Reconstructions</h2>{_image_tag(folder / 'reconstructions.png')}
<h2>Summary ({escape(SUMMARY_NOTE)})</h2>{table(parts["brief"])}
<p>{escape(LIMIT_NOTE)}</p>
<h2>Paired comparisons ({escape(PAIRED_NOTE)})</h2>{table(parts["paired"])}
<h2>Bias and variance over noise seeds ({escape(BIAS_VARIANCE_NOTE)})</h2>
{table(parts["bias_variance"])}{bias_figure}
{conditions}{truth_free}
<h2>Dose efficiency</h2><p>{escape(EFFICIENCY_NOTE)}</p>{table(parts["efficiency"])}
<h2>Comparisons (dose ratios, bootstrap 95% intervals)</h2><ul>{items or '<li>none</li>'}</ul>
<h2>Degenerate runs (kept out of the medians and intervals)</h2>{table(parts["degenerate"])}
<h2>Failed runs</h2>{table(parts["failed"])}
<h2>Methods</h2><ul>{methods}</ul>
<h2>All runs</h2>{table(parts["runs"])}
</body></html>"""


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


def summary_text(summary: pd.DataFrame, metrics: Sequence[str] = ("amp_ssim", "phase_ssim")
                 ) -> str:
    """Per arm and dose: replicates, collapses and each metric's median [interval] (``range``
    below 5 replicates)."""
    lines = []
    for _, row in summary.sort_values(["arm", "dose"]).iterrows():
        cells = [f"{row['arm']:<32} dose {row['dose']:<8.3g} n {int(row['n_finished'])}"
                 f" (failed {int(row['n_failed'])}, degenerate {int(row['n_degenerate'])})"]
        for metric in metrics:
            median = row.get(f"{metric}_median", np.nan)
            low, high = row.get(f"{metric}_ci_low", np.nan), row.get(f"{metric}_ci_high", np.nan)
            kind = "range " if row.get("interval") == "range" else ""
            one = row.get(f"{metric}_n", row["n_finished"]) == 1  # a range of one is no range
            interval = f" [{kind}{low:.3f}, {high:.3f}]" if np.isfinite(low) and not one else ""
            cells.append(f"{metric} {median:.3f}{interval}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def paired_table(paired: pd.DataFrame) -> pd.DataFrame:
    """The paired comparisons as the report shows them: one row per (pair, dose, metric)."""
    if paired.empty:
        return paired
    shown = paired.assign(
        wins=paired["arm_wins"].astype(int).astype(str) + " : "
        + paired["reference_wins"].astype(int).astype(str),
        failed=paired["arm_failed"].astype(int).astype(str) + " : "
        + paired["reference_failed"].astype(int).astype(str),
        winner=paired["winner"].replace("", "none"))
    return shown[["arm", "reference", "dose", "metric", "better", "seeds", "difference", "low",
                  "high", "interval", "wins", "failed", "sign_p", "wilcoxon_p", "winner"]]


def paired_text(paired: pd.DataFrame) -> str:
    """The paired comparisons for a terminal: per pair, a line per (dose, metric)."""
    lines = []
    for (arm, reference), part in paired.groupby(["arm", "reference"], sort=False):
        lines.append(f"{arm} − {reference}, paired by seed (difference of the means "
                     "[interval]; seeds better arm : reference; sign p; winner):")
        for _, row in part.iterrows():
            interval = ("range" if row["interval"] == "range" else "bootstrap")
            lines.append(
                f"  dose {row['dose']:<7.3g} {row['metric']:<20} ({row['better']:<6}) "
                f"{row['difference']:>+10.3g} [{row['low']:>+10.3g}, {row['high']:>+10.3g}] "
                f"{interval:<9} {int(row['arm_wins'])} : {int(row['reference_wins'])}  "
                f"p={row['sign_p']:<5.2g} {row['winner'] or 'none'}")
    return "\n".join(lines)
