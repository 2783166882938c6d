"""Entry point: ``python run.py [-m] key=value ...`` → one tracked job per sweep point.

Hydra composes ``conf/`` and expands sweeps; everything else happens in ``ptycho.job.run_job``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ptycho.config import register_configs
from ptycho.job import run_job
from ptycho.sweep import job_context, record_outcome

PROJECT_ROOT = Path(__file__).resolve().parent


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    context = job_context(PROJECT_ROOT)
    outcome = run_job(cfg, context)
    record_outcome(outcome, context.job_index)
    if not context.sweep and not outcome.ok:
        print(f"error: {outcome.name} {outcome.status}: {outcome.error}", file=sys.stderr)
        raise SystemExit(2 if outcome.status == "INVALID" else 1)
    return outcome.metrics.get("amp_frc50")


if __name__ == "__main__":
    register_configs()
    main()
