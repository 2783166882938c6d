"""Hydra callback: the dose-response report of every multirun, produced when the sweep ends.

Registered in ``conf/config.yaml`` after ``ptycho.sweep.SweepCallback``; Hydra calls end hooks
in reverse order, so the report is written before the sweep summary closes the parent run. A
failure here is reported on stderr and never hides the jobs' results (they are in MLflow and in
the summary that follows).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ptycho.sweep import read_outcomes, read_parent


class ReportCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        parent = read_parent(sweep_dir)
        if not parent.get("parent_run_id"):  # a dry run, or no sweep state
            return
        try:
            from experiments.dose_response.report import make_report

            reused = [o["run_id"] for o in read_outcomes(sweep_dir)
                      if o["status"] == "SKIPPED" and o.get("run_id")]
            report = make_report(tracking_uri=parent["tracking_uri"],
                                 parent_run_id=parent["parent_run_id"],
                                 out=sweep_dir / "report", reused_run_ids=reused)
            print(f"\nreport: {report.html}", flush=True)
        except Exception:
            print("\nthe dose-response report failed (the jobs' results are unaffected):\n"
                  + traceback.format_exc(), file=sys.stderr, flush=True)
