"""``hydra/sweeper=optuna``: a search over a job's settings with Optuna, each trial a ptycho job.

Why our own plugin and not ``hydra-optuna-sweeper``: its last release (1.2/1.3) pins
``optuna<3``, and optuna 2.10's SQLite storage fails under SQLAlchemy 2.1 (which MLflow 3 needs),
so a search could not persist or resume. This one is a thin loop over optuna's ask-and-tell API
(optuna ≥ 4, SQLAlchemy 2) and Hydra's launcher:

1. the search space is ``hydra.sweeper.params`` in Hydra's override grammar — ``choice(a, b)``,
   ``range(lo, hi, step)``, ``interval(lo, hi)``, ``tag(log, interval(lo, hi))`` — plus any
   command-line sweep (``loss=poisson_nll,mae`` is a choice);
2. ``n_jobs`` trials are asked at a time and launched as one batch (run side by side with a
   parallel launcher, ``hydra/launcher=local_parallel``);
3. each trial is a normal job (a child run of the sweep's MLflow parent); its objective is the
   job metric ``hydra.sweeper.metric``, one of ``ptycho.config.SEARCH_OBJECTIVES`` (data only:
   a truth metric is refused; default ``val_loss_best``: the validation loss of the
   weights training kept), told back to the study; a failed job is a FAIL trial;
4. the study lives in ``storage`` (default ``sqlite:///<project>/outputs/optuna.db``) under
   ``study_name`` (default from the experiment, N, gridsize, dose, loss and model), so running the
   same command again resumes it: trials already complete count towards ``n_trials``;
5. the best trial is printed as an override line, written to ``<sweep dir>/optuna_best.yaml`` and
   logged on the sweep's parent run (params ``best.<key>``, metric ``best_value``, tag
   ``best_overrides``).
"""

# No ``from __future__ import annotations``: Hydra's plugin scan executes this module outside
# sys.modules, where a dataclass cannot resolve string annotations.
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

__all__ = ["OptunaSweeper", "SearchSpace", "search_space"]


@dataclass(frozen=True)
class SearchSpace:
    """One searched setting: its key and an optuna distribution (built lazily: no optuna import
    at plugin scan)."""

    key: str
    kind: str
    """``categorical``, ``int`` or ``float``."""
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    def distribution(self) -> Any:
        import optuna

        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return optuna.distributions.FloatDistribution(
            float(self.low), float(self.high), log=self.log, step=self.step)


def _is_int(*values: Any) -> bool:
    return all(isinstance(value, int) and not isinstance(value, bool) for value in values)


def _space_of(override: Override) -> SearchSpace:
    key = override.get_key_element()
    value = override.value()
    if isinstance(value, ChoiceSweep):
        choices = tuple(override.sweep_iterator())
        if not choices:
            raise ValueError(f"{override.input_line}: an empty choice")
        return SearchSpace(key, "categorical", choices=choices)
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError(f"{override.input_line}: an empty range")
        if _is_int(value.start, value.step):
            return SearchSpace(key, "int", low=values[0], high=values[-1], step=value.step)
        return SearchSpace(key, "categorical", choices=tuple(values))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in (value.tags or set())
        if value.start >= value.end or (log_scale and value.start <= 0):
            raise ValueError(f"{override.input_line}: an interval needs low < high (and low > 0 "
                             f"with tag(log, ...)), got [{value.start}, {value.end}]")
        kind = "int" if _is_int(value.start, value.end) else "float"
        return SearchSpace(key, kind, low=value.start, high=value.end, log=log_scale)
    raise ValueError(f"{override.input_line}: not a search space (use choice, range or interval)")


def search_space(params: dict[str, str] | None, arguments: Sequence[str]
                 ) -> tuple[list[SearchSpace], list[str]]:
    """``(searched settings, fixed overrides)`` from the sweeper's ``params`` and the command
    line: a sweep override (``a,b``, ``choice``, ``range``, ``interval``) is searched, anything
    else is passed to every trial. A key given in both takes the command line's value.

    Raises:
        ValueError: a malformed space, naming the override.
    """
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    searched: dict[str, SearchSpace] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        searched.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            searched[key] = _space_of(override)
        else:
            fixed[key] = override.input_line
    return list(searched.values()), list(fixed.values())


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


class OptunaSweeper(Sweeper):
    """Hydra sweeper: see the module docstring."""

    def __init__(self, *, n_trials: int = 8, n_jobs: int = 1, metric: str = "val_loss_best",
                 direction: str = "minimize", sampler: str = "tpe", seed: int = 0,
                 storage: str | None = None, study_name: str | None = None,
                 params: dict[str, str] | None = None) -> None:
        super().__init__()
        for name, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"hydra.sweeper.{name} must be an integer >= 1, got {value!r}")
        from ptycho.config import SEARCH_OBJECTIVES

        if metric not in SEARCH_OBJECTIVES:
            raise ValueError(
                f"hydra.sweeper.metric={metric!r}: a search may optimise only what the measured "
                f"data say ({', '.join(SEARCH_OBJECTIVES)}); a metric scored against the truth "
                "would choose settings on the answer")
        if direction not in ("minimize", "maximize"):
            raise ValueError(f"hydra.sweeper.direction must be minimize or maximize, got "
                             f"{direction!r}")
        if sampler not in ("tpe", "random"):
            raise ValueError(f"hydra.sweeper.sampler must be tpe or random, got {sampler!r}")
        self.n_trials, self.n_jobs, self.metric = n_trials, n_jobs, metric
        self.direction, self.sampler, self.seed = direction, sampler, seed
        self.storage, self.study_name = storage, study_name
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # --- where the study lives ------------------------------------------------------------------

    def _storage(self) -> str:
        if self.storage:
            return str(self.storage)
        from ptycho.runner.sweep import project_root_of

        assert self.config is not None
        folder = project_root_of(self.config) / "outputs"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'optuna.db'}"

    def _study_name(self) -> str:
        if self.study_name:
            return str(self.study_name)
        config = self.config
        assert config is not None
        return (f"{config.tracking.experiment}-N{config.N}-g{config.gridsize}-dose{config.dose}"
                f"-{config.loss}-{config.model.kind}")

    # --- the search -----------------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        from ptycho.runner.sweep_state import SweepState

        assert self.config is not None and self.launcher is not None
        space, fixed = search_space(self.params, arguments)
        if not space:
            raise ValueError("hydra/sweeper=optuna needs a search space: hydra.sweeper.params "
                             "(e.g. train.learning_rate: tag(log, interval(1e-4, 3e-3)))")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage, name = self._storage(), self._study_name()
        study = optuna.create_study(storage=storage, study_name=name, direction=self.direction,
                                    load_if_exists=True)
        # Seeded by the seed and the trials the study already holds: a resumed search goes on
        # where it stopped instead of proposing its first trials again (same seed, same numbers).
        sampler_seed = self.seed + len(study.trials)
        study.sampler = (optuna.samplers.TPESampler(seed=sampler_seed) if self.sampler == "tpe"
                         else optuna.samplers.RandomSampler(seed=sampler_seed))
        done = sum(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials)
        remaining = max(0, self.n_trials - done)
        state = SweepState(sweep_dir)
        state.set_job_total(remaining)
        print(f"optuna: study '{name}' in {storage}: {done} trials complete, {remaining} to run "
              f"({self.n_jobs} at a time), {self.direction} {self.metric}", flush=True)
        distributions = {item.key: item.distribution() for item in space}
        returns = []
        job_index = 0
        while job_index < remaining:
            batch_size = min(self.n_jobs, remaining - job_index)
            trials = [study.ask(distributions) for _ in range(batch_size)]
            batch = [fixed + [f"{key}={_format(value)}" for key, value in trial.params.items()]
                     for trial in trials]
            results = self.launcher.launch(batch, initial_job_idx=job_index)
            for trial, result in zip(trials, results, strict=True):
                value = self._objective(result)
                if value is None:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    log.warning("trial %d failed or has no %s", trial.number, self.metric)
                else:
                    study.tell(trial, value)
            job_index += batch_size
            returns.append(results)
        self._report(study, fixed, sweep_dir, state)
        return returns

    def _objective(self, result: Any) -> float | None:
        try:
            value = result.return_value
        except Exception:  # the job raised: a failed trial, the search goes on
            return None
        if value is None:
            return None
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    def _report(self, study: Any, fixed: list[str], sweep_dir: Path, state: Any) -> None:
        try:
            best = study.best_trial
        except ValueError:
            print("optuna: no trial completed; no best settings", flush=True)
            return
        line = " ".join(f"{key}={_format(value)}" for key, value in best.params.items())
        print(f"optuna: best {self.metric} = {best.value:.6g} (trial {best.number} of "
              f"{len(study.trials)})\noptuna best: {line}", flush=True)
        (sweep_dir / "optuna_best.yaml").write_text(OmegaConf.to_yaml({
            "study_name": study.study_name, "metric": self.metric, "direction": self.direction,
            "best_value": float(best.value), "best_trial": int(best.number),
            "trials": len(study.trials), "best_params": dict(best.params),
            "override_line": line, "fixed": fixed}))
        info = state.read()
        if not info.get("parent_run_id"):
            return
        try:
            from ptycho.runner.tracking import Tracker

            tracker = Tracker(str(info["tracking_uri"]))
            run_id = str(info["parent_run_id"])
            tracker.log_params(run_id, {f"best.{k}": v for k, v in best.params.items()})
            tracker.log_metrics(run_id, {"best_value": float(best.value)})
            tracker.set_tags(run_id, {"best_overrides": line, "optuna.study": study.study_name,
                                      "optuna.metric": self.metric})
        except Exception:
            log.exception("could not log the best trial to the sweep's parent run")
