"""From a sweep's MLflow runs to the dose-response report a paper needs: fetch → analyse →
render → publish (:mod:`.fetch`, :mod:`.analyse`, :mod:`.render`; publishing is logging the
folder to the sweep's parent run).

    python -m experiments.dose_response.report                      # newest sweep, default store
    python -m experiments.dose_response.report --experiment quickstart
    python -m experiments.dose_response.report --parent-run <id> --out some/folder

Runs are grouped by their ``arm`` tag, never by folder names; the seeds of an arm at one dose
are its spread. What the files hold: docs/report.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from experiments.dose_response.analyse import DEFAULT_THRESHOLDS, analyse, bias_variance
from experiments.dose_response.fetch import (
    RESOLUTION_METRICS,
    fetch_sweep,
    noise_replicates,
    reconstructions,
)
from experiments.dose_response.render import paired_text, render, summary_text
from ptycho.evaluation import METRIC_KEYS
from ptycho.runner.tracking import Tracker, resolve_store

__all__ = ["Report", "make_report", "paired_text", "summary_text"]

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Report:
    folder: Path
    html: Path
    runs: pd.DataFrame
    summary: pd.DataFrame
    efficiency: pd.DataFrame
    comparisons: pd.DataFrame
    paired: pd.DataFrame


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
    """Build the report of one sweep (default: the newest in the store), log it to the sweep's
    parent run under ``report/`` and return its paths and tables.

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
        parent_run_id = found[1]
    sweep = fetch_sweep(tracker, parent_run_id, reused_run_ids)
    analysis = analyse(sweep.runs, thresholds)
    folder = Path(out) if out else PROJECT_ROOT / "outputs" / "reports" / parent_run_id
    with tempfile.TemporaryDirectory(prefix="ptycho-report-") as scratch:
        images = reconstructions(tracker, sweep.runs, Path(scratch))
        replicates = noise_replicates(tracker, sweep.runs, Path(scratch))
    analysis = dataclasses.replace(analysis, bias_variance=bias_variance(replicates))
    html = render(folder, sweep, analysis, images, x=x)
    tracker.log_artifacts(parent_run_id, folder, "report")  # publish
    return Report(folder=folder, html=html, runs=sweep.runs, summary=analysis.summary,
                  efficiency=analysis.efficiency, comparisons=analysis.comparisons,
                  paired=analysis.paired)


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
    if not report.paired.empty:
        print(paired_text(report.paired))
    for statement in report.comparisons["statement"]:
        print(statement)
    print(f"\nreport: {report.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
