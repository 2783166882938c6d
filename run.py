"""Entry point: ``python run.py [-m] key=value ...`` → one tracked job per sweep point.

Hydra composes ``conf/`` and expands sweeps; everything else happens in ``ptycho.job.run_job``
(in a fresh child process with ``isolate=true``). SIGTERM and SIGINT stop the job with its run
closed as KILLED; the process then exits with 128 + the signal's number.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ptycho import runtime
from ptycho.config import register_configs
from ptycho.isolate import run_job_isolated
from ptycho.job import JobOutcome, run_job
from ptycho.sweep import job_context, record_outcome

PROJECT_ROOT = Path(__file__).resolve().parent


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    context = job_context(PROJECT_ROOT)

    def record(outcome: JobOutcome) -> None:
        record_outcome(outcome, context.job_index)

    with runtime.termination_handlers():
        if cfg.get("isolate"):
            plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
            outcome = run_job_isolated(plain, context, on_killed=record)  # type: ignore[arg-type]
        else:
            outcome = run_job(cfg, context, on_killed=record)
    record(outcome)
    if not context.sweep and not outcome.ok:
        print(f"error: {outcome.name} {outcome.status}: {outcome.error}", file=sys.stderr)
        raise SystemExit(2 if outcome.status == "INVALID" else 1)
    return outcome.metrics.get("amp_frc50")


if __name__ == "__main__":
    register_configs()
    try:
        main()
    except KeyboardInterrupt as interrupt:
        print(f"stopped: {interrupt or 'interrupted by SIGINT'}", file=sys.stderr, flush=True)
        sys.exit(runtime.exit_code(interrupt))
