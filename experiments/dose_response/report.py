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

from ptycho import viz
from ptycho.evaluation import METRIC_KEYS
from ptycho.tracking import RunRecord, Tracker, resolve_store

__all__ = [
    "AXES",
    "Report",
    "collect",
    "dose_efficiency",
    "make_report",
    "summarise",
]

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
AXES = ("N", "gridsize", "dose", "loss", "model", "data", "seed")
ARM = ("N", "gridsize", "loss", "model", "data")
ITERATIVE = ("lsqml", "epie")
"""The iterative arms (pty-chi); the dose-efficiency table compares the other arms with LSQML."""
LIMIT_METRICS = ("amp_mse_crb", "phase_mse_crb", "amp_crb_efficiency", "phase_crb_efficiency")
"""The Cramér–Rao bound of each run's test scan and the efficiencies bound / MSE (eval.crb)."""
EXTRA_METRICS = ("measured_dose", "time_train_s", "time_eval_s", "time_compile_s",
                 "train_patterns_per_s", *LIMIT_METRICS)
SUMMARY_METRICS = (*METRIC_KEYS, "measured_dose", "time_train_s", *LIMIT_METRICS)
LIMIT_NOTE = (
    "Dashed black lines on the MSE panels: the Cramér–Rao bound of the test scan (the least MSE "
    "any unbiased reconstruction from those photons can have, with the probe and positions "
    "known; docs/physics.md §11). Efficiency = bound / MSE: 1 is the limit. It can exceed 1 only "
    "for a biased estimator (a network whose learned prior helps, a regularised reconstruction) "
    "or an arm that used more photons than the test scan (with data.design=generalize the PINN "
    "learned from a second object's photons too)."
)
DEFAULT_THRESHOLDS = {"amp_frc50": 5.0, "amp_psnr": 15.0}
TRUTH = "ground truth"


@dataclass(frozen=True)
class Report:
    folder: Path
    html: Path
    runs: pd.DataFrame
    summary: pd.DataFrame
    efficiency: pd.DataFrame


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


def collect(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per run: run id, name, status, the axes (from params) and every metric."""
    rows = []
    for record in records:
        row = {"run_id": record.run_id, "name": record.name, "status": record.status,
               **_axis_values(record), "error": record.tags.get("error", "")}
        for key in (*METRIC_KEYS, *EXTRA_METRICS):
            row[key] = record.metrics.get(key, np.nan)
        rows.append(row)
    columns = ["run_id", "name", "status", *AXES, "error", *METRIC_KEYS, *EXTRA_METRICS]
    table = pd.DataFrame(rows, columns=columns)
    if len(table):
        table["arm"] = table.apply(arm_label, axis=1)
    else:
        table["arm"] = pd.Series(dtype=str)
    return table.sort_values(["arm", "dose", "seed"], kind="stable").reset_index(drop=True)


def summarise(runs: pd.DataFrame, metrics: Sequence[str] = SUMMARY_METRICS) -> pd.DataFrame:
    """Per (arm, dose): mean, min, max and count of each metric over FINISHED runs (the seeds),
    and ``n_failed`` (runs that did not finish) counted apart, never dropped."""
    if runs.empty:
        return pd.DataFrame(columns=["arm", *ARM, "dose", "n_finished", "n_failed"])
    runs = runs.assign(**{axis: "" for axis in ARM if axis not in runs})  # older tables
    finished = runs[runs["status"] == "FINISHED"]
    keys = ["arm", *ARM, "dose"]
    counts = runs.groupby(keys, dropna=False).agg(
        n_runs=("run_id", "count"),
        n_finished=("status", lambda s: int((s == "FINISHED").sum())),
    ).reset_index()
    counts["n_failed"] = counts["n_runs"] - counts["n_finished"]
    present = [m for m in metrics if m in finished]
    if finished.empty or not present:
        return counts
    stats = finished.groupby(keys, dropna=False)[present].agg(["mean", "min", "max", "count"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    return counts.merge(stats.reset_index(), on=keys, how="left")


EFFICIENCY_COLUMNS = ["arm", "metric", "threshold", "dose_reached", "bound", "vs_lsqml"]


def dose_efficiency(
    summary: pd.DataFrame, metric: str, threshold: float
) -> pd.DataFrame:
    """Lowest dose at which each arm's mean ``metric`` reaches ``threshold``.

    Between two measured doses the crossing is interpolated linearly in log10(dose). An arm that
    meets the threshold at its lowest dose gets that dose with ``bound="<="``; one that never
    does gets NaN with ``bound="not reached"``. ``vs_lsqml`` is the arm's dose over the dose the
    LSQML arm of the same N needs (below 1: fewer photons than LSQML; NaN where either is
    unknown).
    """
    rows = []
    column = f"{metric}_mean"
    lsqml: dict[int, float] = {}
    for arm, part in summary.groupby("arm"):
        part = part.dropna(subset=[column]).sort_values("dose")
        doses, values = part["dose"].to_numpy(float), part[column].to_numpy(float)
        dose, bound = math.nan, "not reached"
        for i, (d, v) in enumerate(zip(doses, values, strict=True)):
            if v >= threshold:
                if i == 0:
                    dose, bound = d, "<="
                else:
                    d0, v0 = doses[i - 1], values[i - 1]
                    fraction = (threshold - v0) / (v - v0)
                    dose = 10 ** (math.log10(d0) + fraction * (math.log10(d) - math.log10(d0)))
                    bound = "="
                break
        N = int(part["N"].iloc[0]) if len(part) and "N" in part else -1
        if arm == f"N{N} lsqml":
            lsqml[N] = dose
        rows.append({"arm": arm, "metric": metric, "threshold": threshold,
                     "dose_reached": dose, "bound": bound, "N": N})
    for row in rows:
        reference = lsqml.get(row.pop("N"), math.nan)
        row["vs_lsqml"] = (row["dose_reached"] / reference
                           if reference > 0 and not math.isnan(row["dose_reached"]) else math.nan)
    return pd.DataFrame(rows, columns=EFFICIENCY_COLUMNS)


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
) -> Report:
    """Build the report of one sweep (default: the newest in the store) and return its paths.

    ``reused_run_ids``: FINISHED runs of earlier sweeps that this one skipped (``resume=true``);
    they belong to the study's result and are reported beside the sweep's own children.
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
    frames = [dose_efficiency(summary, metric, value) for metric, value in thresholds.items()
              if f"{metric}_mean" in summary]
    efficiency = (pd.concat(frames, ignore_index=True) if frames
                  else pd.DataFrame(columns=EFFICIENCY_COLUMNS))

    folder = Path(out) if out else PROJECT_ROOT / "outputs" / "reports" / parent_run_id
    folder.mkdir(parents=True, exist_ok=True)
    runs.to_csv(folder / "runs.csv", index=False)
    summary.to_csv(folder / "summary.csv", index=False)
    efficiency.to_csv(folder / "dose_efficiency.csv", index=False)

    failures = summary[["arm", "dose", "n_failed"]]
    title = f"{experiment_name}: sweep {parent_record.name}"
    figure = viz.dose_response_figure(summary, failures, title=title)
    figure.savefig(folder / "dose_response.png", dpi=100)
    doses = sorted(runs["dose"].dropna().unique().tolist())
    arms = [TRUTH, *sorted(runs["arm"].unique().tolist())]
    with tempfile.TemporaryDirectory(prefix="ptycho-report-") as scratch:
        images = _reconstructions(tracker, runs, Path(scratch))
    grid = viz.reconstruction_grid_figure(images, doses, arms, title=f"{title}: amplitude")
    grid.savefig(folder / "reconstructions.png", dpi=100)

    failed = runs[runs["status"] != "FINISHED"][["name", "status", "error"]]
    overrides = parent_record.tags.get("sweep.overrides", "[]")
    commit = parent_record.tags.get("git_commit", "unknown")
    dirty = parent_record.tags.get("git_dirty", "unknown")
    headline = ["arm", "dose", "n_finished", "n_failed", "amp_frc50_mean", "amp_psnr_mean",
                "amp_ssim_mean", "phase_frc50_mean", "phase_ssim_mean", "amp_mse_mean",
                "amp_mse_crb_mean", "amp_crb_efficiency_mean", "phase_mse_mean",
                "phase_mse_crb_mean", "phase_crb_efficiency_mean"]
    brief = summary[[c for c in headline if c in summary]]
    sweep_line = (f"experiment `{experiment_name}`, parent run `{parent_run_id}`, "
                  f"{len(runs)} runs ({int((runs['status'] == 'FINISHED').sum())} finished, "
                  f"{len(failed)} not; {len(reused)} reused from earlier sweeps), "
                  f"git `{commit}` (dirty: {dirty}), overrides "
                  f"`{' '.join(json.loads(overrides))}`")
    markdown = [f"# Dose-response report: {experiment_name}", "", sweep_line, "",
                "## Summary (mean over seeds)", "", _markdown(brief), "", LIMIT_NOTE, "",
                "## Dose efficiency", "", _markdown(efficiency), "",
                "## Failed runs", "", _markdown(failed), "",
                "![dose response](dose_response.png)", "",
                "![reconstructions](reconstructions.png)", ""]
    (folder / "report.md").write_text("\n".join(markdown))
    html = f"""<!doctype html><html><head><meta charset="utf-8">
<title>Dose-response report: {experiment_name}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:2px 6px}}
</style></head><body>
<h1>Dose-response report: {experiment_name}</h1><p>{sweep_line}</p>
<h2>Dose response</h2>{_image_tag(folder / 'dose_response.png')}
<h2>Reconstructions</h2>{_image_tag(folder / 'reconstructions.png')}
<h2>Summary (mean over seeds)</h2>{brief.to_html(index=False, float_format='{:.4g}'.format)}
<p>{html_escape(LIMIT_NOTE)}</p>
<h2>Dose efficiency</h2>
<p>Lowest dose at which each arm's mean reaches the threshold (log-dose interpolation);
<code>vs_lsqml</code>: that dose over the dose LSQML (pty-chi, Poisson) needs at the same N, so
below 1 the arm needs fewer photons than the iterative reconstruction. Iterative arms
reconstruct the scored scan.</p>
{efficiency.to_html(index=False, float_format='{:.4g}'.format)}
<h2>Failed runs</h2>{failed.to_html(index=False) if len(failed) else '<p>none</p>'}
<h2>All runs</h2>{runs.drop(columns=['error']).to_html(index=False, float_format='{:.4g}'.format)}
</body></html>"""
    (folder / "report.html").write_text(html)
    tracker.log_artifacts(parent_run_id, folder, "report")
    return Report(folder=folder, html=folder / "report.html", runs=runs, summary=summary,
                  efficiency=efficiency)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Dose-response report of a sweep.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--parent-run", help="the sweep's parent run id")
    source.add_argument("--experiment", help="newest sweep of this MLflow experiment")
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI if set, else "
                        "sqlite:///<project>/outputs/mlflow.db")
    parser.add_argument("--out", help="output folder (default: outputs/reports/<parent id>)")
    parser.add_argument("--frc50", type=float, default=DEFAULT_THRESHOLDS["amp_frc50"],
                        help="amplitude FRC50 threshold (ring) for the dose-efficiency table")
    parser.add_argument("--psnr", type=float, default=DEFAULT_THRESHOLDS["amp_psnr"],
                        help="amplitude PSNR threshold (dB) for the dose-efficiency table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = make_report(
            tracking_uri=args.tracking_uri, parent_run_id=args.parent_run,
            experiment=args.experiment, out=args.out,
            thresholds={"amp_frc50": args.frc50, "amp_psnr": args.psnr},
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.summary.to_string(max_cols=12, max_colwidth=28))
    print(f"\nreport: {report.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
