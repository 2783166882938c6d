"""The configuration schema (Hydra structured configs) and its validation into frozen settings.

Config enters once: Hydra composes ``conf/`` against :class:`Config` (so a typo or a wrong type
fails at composition), then :func:`validate` checks every value and returns :class:`JobSettings`,
frozen plain values that ``ptycho.job`` unpacks into keyword arguments. A bad value raises
:class:`ConfigError` naming the key and the value, before any work.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptycho.checks import (
    check_dose,
    check_gridsize,
    check_patch_size,
    check_positive_int,
    validation_count,
)
from ptycho.data.objects import ObjectSpec
from ptycho.data.probe import ProbeSpec
from ptycho.data.scan import ScanSpec
from ptycho.data.simulation import SimulationSpec

__all__ = [
    "SCHEMA_NAME",
    "Config",
    "ConfigError",
    "JobSettings",
    "Loss",
    "config_hash",
    "format_dose",
    "register_configs",
    "run_name",
    "validate",
]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the value."""


class Loss(Enum):
    poisson_nll = "poisson_nll"
    mae = "mae"


# --- The schema: what conf/ may contain, with types and defaults --------------------------------


@dataclass
class ObjectConfig:
    kind: str = "lines"  # lines | grf | npz
    size: int = 128  # pixels per side (ignored for npz)
    phase: str = "independent"  # none | structure | independent
    amplitude_min: float = 0.5
    amplitude_max: float = 1.0
    phase_max: float = 1.5707963267948966  # radians
    lines_density: float = 4.0  # segments per 1000 px² of the drawing canvas
    grf_exponent: float = 3.0  # power-law exponent of the GRF spectrum
    path: str = ""  # NPZ file (npz only)


@dataclass
class ProbeConfig:
    kind: str = "disc"  # disc | npz
    radius_fraction: float = 0.17  # disc radius / N
    edge_sigma: float = 1.0  # pixels
    phase_curvature: float = 2.0  # radians at the disc edge (breaks the twin-image ambiguity)
    path: str = ""  # NPZ file (npz only)


@dataclass
class ScanConfig:
    kind: str = "raster"  # raster | random
    margin: float = 0.0  # pixels kept free beyond the patch half-width
    jitter: float = 1.0  # ± pixels (raster only)
    subpixel: bool = True  # False rounds positions to whole pixels


@dataclass
class DataConfig:
    object: ObjectConfig = field(default_factory=ObjectConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    n_train: int = 512  # training diffraction patterns
    n_test: int = 128  # test diffraction patterns (evaluation)
    test_object: str = "same"  # same | independent
    noise_seed: int | None = None  # None: the job's seed
    cache: bool = True  # reuse simulated datasets from cache_dir
    cache_dir: str | None = None  # None: <project>/outputs/cache/datasets


@dataclass
class ModelConfig:
    kind: str = "pinn"  # pinn | baseline
    bottleneck_filters: int = 256
    trainable_probe: bool = False


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 16  # groups per step
    learning_rate: float = 5e-4  # 1e-3 oscillates with this generator (measured)
    validation_fraction: float = 0.05
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_learning_rate: float = 1e-4
    early_stopping_patience: int = 3
    jit_compile: bool = True
    dtype_policy: str = "float32"


@dataclass
class EvalConfig:
    keep_fraction: float = 0.3  # central part of each patch stitched, fraction of N
    border: int = 4  # pixels trimmed from the scanned region
    phase_alignment: str = "plane"  # plane | mean | none
    subpixel_registration: bool = False
    batch_size: int = 64  # inference batch (groups)
    n_diffraction: int = 4  # patterns shown in the diffraction figure


@dataclass
class TrackingConfig:
    uri: str | None = None  # None: sqlite <project>/outputs/mlflow.db
    artifact_location: str | None = None  # None: <project>/outputs/mlartifacts (file stores)
    experiment: str = "default"  # MLflow experiment: one per study
    log_model: bool = True  # store the trained model folder as an artifact
    # A RUNNING run with no heartbeat for this long (its job's process on another host) is stale:
    # a resumed sweep marks it FAILED and reruns its job. Same host: a dead process id suffices.
    stale_after_s: float = 600.0


@dataclass
class Config:
    N: int = 64  # patch side, a power of two >= 16
    gridsize: int = 1  # C = gridsize² patterns per sample
    dose: float = 1e6  # expected photons per diffraction pattern
    loss: Loss = Loss.poisson_nll
    seed: int = 0
    resume: bool = True  # skip jobs whose config_hash already has a FINISHED run
    dry_run: bool = False  # validate and print the plan; no training, no runs
    isolate: bool = False  # run each job's work in a fresh child process (memory, GPU released)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# --- Validated, frozen settings -----------------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    validation_fraction: float
    plateau_factor: float
    plateau_patience: int
    min_learning_rate: float
    early_stopping_patience: int
    jit_compile: bool
    dtype_policy: str


@dataclass(frozen=True)
class EvalSettings:
    keep_fraction: float
    border: int
    phase_alignment: str
    subpixel_registration: bool
    batch_size: int
    n_diffraction: int


@dataclass(frozen=True)
class TrackingSettings:
    uri: str | None
    artifact_location: str | None
    experiment: str
    log_model: bool
    stale_after_s: float


@dataclass(frozen=True)
class JobSettings:
    """One sweep point, validated. ``resolved`` is the plain resolved config (for logging)."""

    N: int
    gridsize: int
    dose: float
    loss: str
    seed: int
    model: str
    bottleneck_filters: int
    trainable_probe: bool
    simulation: SimulationSpec
    cache: bool
    cache_dir: str | None
    train: TrainSettings
    eval: EvalSettings
    tracking: TrackingSettings
    resume: bool
    dry_run: bool
    isolate: bool
    resolved: dict[str, Any] = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return run_name(self.N, self.gridsize, self.dose, self.loss, self.model, self.seed)

    @property
    def config_hash(self) -> str:
        return config_hash(self.resolved)


def format_dose(dose: float) -> str:
    """``1e4`` for 10000.0, ``2.5e3`` for 2500.0: compact and sortable by eye."""
    mantissa, exponent = f"{dose:.3e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def run_name(N: int, gridsize: int, dose: float, loss: str, model: str, seed: int) -> str:
    """Child-run name from its axes, e.g. ``N64_g2_dose1e4_poisson_nll_pinn_s0``."""
    return f"N{N}_g{gridsize}_dose{format_dose(dose)}_{loss}_{model}_s{seed}"


_NOT_HASHED = ("tracking", "resume", "dry_run", "isolate", "hydra")


def config_hash(resolved: dict[str, Any]) -> str:
    """sha256 (16 hex) of the resolved config without tracking, hydra, resume, dry_run and
    isolate keys:
    two jobs with equal hashes compute the same thing."""
    relevant = {k: v for k, v in resolved.items() if k not in _NOT_HASHED}
    blob = json.dumps(relevant, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _fail(key: str, value: object, reason: str) -> ConfigError:
    return ConfigError(f"{key}={value!r}: {reason}")


def _choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(key, value, f"must be one of {list(choices)}")
    return str(value)


def _number(key: str, value: object, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(key, value, "must be a number")
    if integer and not isinstance(value, int):
        raise _fail(key, value, "must be an integer")
    if not math.isfinite(value):
        raise _fail(key, value, "must be finite")
    if low is not None and (value <= low if low_open else value < low):
        raise _fail(key, value, f"must be {'>' if low_open else '>='} {low}")
    if high is not None and value > high:
        raise _fail(key, value, f"must be <= {high}")
    return value


def _wrap(key: str, value: object, build):
    """Call a data-layer constructor, re-raising its ValueError under the config key."""
    try:
        return build()
    except ValueError as error:
        raise _fail(key, value, str(error)) from None


def _spec(prefix: str, build):
    """Build a data-layer spec; its ValueError (which names field and value) gets the prefix."""
    try:
        return build()
    except ValueError as error:
        raise ConfigError(f"{prefix}.{error}") from None


def _plain(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    else:
        container = json.loads(json.dumps(cfg, default=lambda v: getattr(v, "value", str(v))))
    container.pop("hydra", None)
    return container


def validate(cfg: DictConfig | dict[str, Any]) -> JobSettings:
    """Check every value of a composed config; return frozen :class:`JobSettings`.

    Raises:
        ConfigError: naming the first bad key and its value.
    """
    if isinstance(cfg, DictConfig):
        schema = OmegaConf.structured(Config)
        try:
            cfg = OmegaConf.merge(schema, cfg)
        except Exception as error:  # omegaconf's own errors name the key
            raise ConfigError(str(error).splitlines()[0]) from None
    resolved = _plain(cfg)
    c = resolved
    data, train, evaluation, tracking = c["data"], c["train"], c["eval"], c["tracking"]

    N = _wrap("N", c["N"], lambda: check_patch_size(c["N"]))
    gridsize = _wrap("gridsize", c["gridsize"], lambda: check_gridsize(c["gridsize"]))
    dose = _wrap("dose", c["dose"], lambda: check_dose(c["dose"]))
    loss = _choice("loss", c["loss"], tuple(item.value for item in Loss))
    seed = _number("seed", c["seed"], low=0, integer=True)
    model = _choice("model.kind", c["model"]["kind"], ("pinn", "baseline"))
    bottleneck = _wrap("model.bottleneck_filters", c["model"]["bottleneck_filters"],
                       lambda: check_positive_int(c["model"]["bottleneck_filters"],
                                                  "bottleneck_filters"))

    obj, probe, scan = data["object"], data["probe"], data["scan"]
    for key in ("size", "amplitude_min", "amplitude_max", "phase_max", "lines_density",
                "grf_exponent"):
        _number(f"data.object.{key}", obj[key], integer=key == "size")
    if obj["kind"] == "npz" and not Path(obj["path"]).is_file():
        raise _fail("data.object.path", obj["path"], "NPZ file not found (data/object=npz)")
    if probe["kind"] == "npz" and not Path(probe["path"]).is_file():
        raise _fail("data.probe.path", probe["path"], "NPZ file not found (data.probe.kind=npz)")
    object_spec = _spec("data.object", lambda: ObjectSpec(**obj))
    probe_spec = _spec("data.probe", lambda: ProbeSpec(**probe))
    scan_spec = _spec("data.scan", lambda: ScanSpec(**scan))
    n_train = _wrap("data.n_train", data["n_train"],
                    lambda: check_positive_int(data["n_train"], "n_train"))
    _wrap("data.n_test", data["n_test"], lambda: check_positive_int(data["n_test"], "n_test"))
    if data["noise_seed"] is not None:
        _number("data.noise_seed", data["noise_seed"], low=0, integer=True)
    simulation = _spec(
        "data",
        lambda: SimulationSpec(
            N=N, dose=dose, n_train=n_train, n_test=data["n_test"], seed=seed,
            noise_seed=data["noise_seed"], obj=object_spec, probe=probe_spec, scan=scan_spec,
            test_object=data["test_object"],
        ),
    )
    channels = gridsize**2
    for split in ("n_train", "n_test"):
        if data[split] < channels:
            raise _fail(f"data.{split}", data[split],
                        f"gridsize={gridsize} needs at least {channels} patterns per group")

    epochs = _wrap("train.epochs", train["epochs"],
                   lambda: check_positive_int(train["epochs"], "epochs"))
    batch_size = _wrap("train.batch_size", train["batch_size"],
                       lambda: check_positive_int(train["batch_size"], "batch_size"))
    _number("train.learning_rate", train["learning_rate"], low=0, low_open=True)
    _number("train.validation_fraction", train["validation_fraction"], low=0, high=0.5)
    _number("train.plateau_factor", train["plateau_factor"], low=0, low_open=True, high=1)
    _number("train.plateau_patience", train["plateau_patience"], low=0, integer=True)
    _number("train.min_learning_rate", train["min_learning_rate"], low=0)
    _number("train.early_stopping_patience", train["early_stopping_patience"], low=0,
            integer=True)
    _choice("train.dtype_policy", train["dtype_policy"],
            ("float32", "mixed_float16", "mixed_bfloat16"))
    n_val = validation_count(n_train, train["validation_fraction"])
    if n_train - n_val < batch_size:
        raise _fail("train.batch_size", batch_size,
                    f"exceeds the {n_train - n_val} training groups (data.n_train={n_train})")

    _number("eval.keep_fraction", evaluation["keep_fraction"], low=0, low_open=True, high=1)
    _number("eval.border", evaluation["border"], low=0, integer=True)
    _choice("eval.phase_alignment", evaluation["phase_alignment"], ("plane", "mean", "none"))
    _wrap("eval.batch_size", evaluation["batch_size"],
          lambda: check_positive_int(evaluation["batch_size"], "batch_size"))
    _number("eval.n_diffraction", evaluation["n_diffraction"], low=1, integer=True)
    if not str(tracking["experiment"]).strip():
        raise _fail("tracking.experiment", tracking["experiment"], "must not be empty")
    # Heartbeats come every 60 s: anything shorter than three would call live runs stale.
    _number("tracking.stale_after_s", tracking["stale_after_s"], low=180)

    return JobSettings(
        N=N,
        gridsize=gridsize,
        dose=dose,
        loss=loss,
        seed=seed,
        model=model,
        bottleneck_filters=bottleneck,
        trainable_probe=bool(c["model"]["trainable_probe"]),
        simulation=simulation,
        cache=bool(data["cache"]),
        cache_dir=data["cache_dir"],
        train=TrainSettings(**{**train, "epochs": epochs, "batch_size": batch_size}),
        eval=EvalSettings(**evaluation),
        tracking=TrackingSettings(**tracking),
        resume=bool(c["resume"]),
        dry_run=bool(c["dry_run"]),
        isolate=bool(c["isolate"]),
        resolved=resolved,
    )


SCHEMA_NAME = "ptycho_schema"


def register_configs() -> None:
    """Register :class:`Config` with Hydra's ConfigStore as ``ptycho_schema``, the first entry of
    ``conf/config.yaml``'s defaults: every composed config is then typed and closed (a typo or a
    wrong type fails at composition). Called by the entry point, never at import."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=Config)
