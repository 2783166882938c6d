"""Hydra callback: the dose-response report of every multirun, produced when the sweep ends.

Registered in ``conf/config.yaml`` beside ``ptycho.runner.sweep.SweepCallback``; the two do not
depend on their order (the summary callback neither raises nor deletes anything the report
reads, and logging to a closed parent run is allowed). A failure here is reported on stderr and
never hides the jobs' results (they are in MLflow and in the sweep's summary).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ptycho import runtime
from ptycho.runner.sweep_state import SweepState


class ReportCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        state = SweepState(sweep_dir)
        try:
            parent = state.read()
        except Exception as error:
            print(f"\nno dose-response report: {error}", file=sys.stderr, flush=True)
            return
        if not parent.get("parent_run_id"):  # a dry run, or no sweep state
            return
        try:
            runtime.quiet_tensorflow()  # the report's figures import TensorFlow (evaluation)
            from experiments.dose_response.report import make_report

            reused = [o["run_id"] for o in state.outcomes()
                      if o["status"] == "SKIPPED" and o.get("run_id")]
            report = make_report(tracking_uri=parent["tracking_uri"],
                                 parent_run_id=parent["parent_run_id"],
                                 out=sweep_dir / "report", reused_run_ids=reused)
            from experiments.dose_response.report import paired_text, summary_text

            print("\nper arm and dose (median over replicates [interval: a bootstrap 95% "
                  "interval from 5 replicates on, else the range]):\n"
                  + summary_text(report.summary), flush=True)
            if not report.paired.empty:
                print("\n" + paired_text(report.paired), flush=True)
            compared = report.comparisons
            for statement in compared[compared["ratio"].notna()]["statement"]:
                print(statement, flush=True)
            if compared["ratio"].isna().any():  # e.g. a single dose, or arms that never cross
                print(f"({int(compared['ratio'].isna().sum())} comparisons without a ratio: "
                      "see the report)", flush=True)
            print(f"\nreport: {report.html}", flush=True)
        except Exception:
            print("\nthe dose-response report failed (the jobs' results are unaffected):\n"
                  + traceback.format_exc(), file=sys.stderr, flush=True)
