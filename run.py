"""Entry point: ``python run.py [-m] key=value ...`` → one tracked job per sweep point.

Hydra composes ``conf/`` and expands sweeps; everything else happens in ``ptycho.runner``
(in a fresh child process with ``isolate=true``). SIGTERM and SIGINT stop the job with its run
closed as KILLED; the sweep's own process then exits with 128 + the signal's number, while a
parallel launcher's worker returns, so the launcher collects the job and goes on.
"""

from __future__ import annotations

import logging
import sys
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ptycho.runner.isolate import run_job_isolated
from ptycho.runner.job import run_job
from ptycho.runner.outcome import JobOutcome
from ptycho.runner.signals import exit_code, termination_handlers
from ptycho.runner.sweep import finish, job_context, register_configs
from ptycho.runner.sweep_state import SweepState

PROJECT_ROOT = Path(__file__).resolve().parent
log = logging.getLogger("ptycho.run")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_config = HydraConfig.get()  # Hydra's state is read here, at the edge, and passed on
    context = job_context(hydra_config, PROJECT_ROOT)
    state = SweepState(hydra_config.sweep.dir) if hydra_config.mode == RunMode.MULTIRUN else None
    if state is not None and state.stopping:  # a worker picking up a queued job after the
        log.warning("%s not started: the sweep is stopping", context.prefix)  # launcher's signal
        return None

    def record(outcome: JobOutcome) -> None:
        if state is not None:
            state.record(context.job_index, outcome.to_dict())

    try:
        with (state.in_flight(context.job_index) if state is not None else nullcontext()), \
                termination_handlers():
            if cfg.get("isolate"):
                plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
                outcome = run_job_isolated(plain, context, on_killed=record)  # type: ignore
            else:
                outcome = run_job(cfg, context, on_killed=record)
    except KeyboardInterrupt:
        if context.in_launcher:
            raise  # this process is the sweep (or a single run): it stops
        # A worker of a parallel launcher: the job is over (its run KILLED, its outcome
        # recorded); returning lets the launcher collect it, and the sweep's summary say so.
        return None
    record(outcome)
    if not context.sweep and not outcome.ok:
        print(f"error: {outcome.name} {outcome.status}: {outcome.error}", file=sys.stderr)
        raise SystemExit(2 if outcome.status == "INVALID" else 1)
    # What a search sweeper (hydra/sweeper=optuna) optimises: its metric, read here at the edge.
    # (one of ptycho.config.SEARCH_OBJECTIVES, the sweeper checks; no metric: nothing to return)
    metric = hydra_config.sweeper.get("metric")
    return outcome.metrics.get(str(metric)) if metric else None


if __name__ == "__main__":
    register_configs()
    try:
        main()
    except KeyboardInterrupt as interrupt:
        finish()  # the sweep's parent run: KILLED
        print(f"stopped: {interrupt or 'interrupted by SIGINT'}", file=sys.stderr, flush=True)
        sys.exit(exit_code(interrupt))
    except BaseException:
        finish()
        raise
    sys.exit(finish())
