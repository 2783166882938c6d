"""The one schema of a job's settings: frozen, typed sections with every default written once.

Config enters once, at the edge. Hydra composes ``conf/`` against a structured config that is
*generated* from these classes (:func:`hydra_schema`), so a typo, a wrong type or an unknown
choice fails at composition; :func:`validate` then builds a frozen :class:`JobConfig`, whose
sections check their own values in ``__post_init__``. A bad value raises :class:`ConfigError`
naming the key (with its section path) and the value, before any work.

The choices of an option are declared beside it as a ``StrEnum``; a member compares equal to its
string, so ``config.model.kind == "pinn"`` reads naturally. The data layer takes these sections
directly (``ptycho.data`` imports this module, never the reverse), and the YAML files under
``conf/`` only repeat these defaults for the reader (``tests/test_config.py`` holds them equal).

This module imports neither TensorFlow nor ``ptycho.data`` (``tests/test_import_hygiene.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
import zipfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptycho.checks import check_dose, check_gridsize, check_patch_size, validation_count

__all__ = [
    "ITERATIVE_SETTINGS",
    "MAX_DOSE",
    "NOT_FOR_ITERATIVE",
    "SCHEMA_NAME",
    "Activation",
    "ConfigError",
    "DataConfig",
    "Design",
    "Device",
    "DtypePolicy",
    "EvalConfig",
    "JitCompile",
    "JobConfig",
    "Loss",
    "ModelConfig",
    "ModelKind",
    "ObjectConfig",
    "ObjectKind",
    "PhaseAlignment",
    "PhaseMode",
    "PhaseSync",
    "ProbeConfig",
    "ProbeKind",
    "ScanConfig",
    "ScanKind",
    "StitchWeighting",
    "TrackingConfig",
    "TrainConfig",
    "config_hash",
    "format_dose",
    "hydra_schema",
    "register_configs",
    "run_name",
    "validate",
]

SCHEMA_NAME = "ptycho_schema"

MAX_DOSE = 1e15
"""Photons per pattern above which float32 training overflows. Measured at N=16: training turns
NaN between 1e21 and 1e23 (Adam's squared gradient overflows float32); 1e15 keeps a wide margin
and is far above any real detector's dose per pattern."""

TRACKING_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "databricks")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the value."""


# --- Choices -------------------------------------------------------------------------------------


class Loss(StrEnum):
    poisson_nll = "poisson_nll"
    mae = "mae"


class ModelKind(StrEnum):
    pinn = "pinn"
    baseline = "baseline"
    lsqml = "lsqml"
    epie = "epie"

    @property
    def iterative(self) -> bool:
        """An iterative reconstruction by pty-chi (no network, no training)."""
        return self in (ModelKind.lsqml, ModelKind.epie)


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


class ObjectKind(StrEnum):
    lines = "lines"
    grf = "grf"
    npz = "npz"


class PhaseMode(StrEnum):
    none = "none"
    structure = "structure"
    independent = "independent"


class ProbeKind(StrEnum):
    disc = "disc"
    npz = "npz"


class ScanKind(StrEnum):
    raster = "raster"
    random = "random"


class Design(StrEnum):
    """What a job's test set is (docs/physics.md §4.4)."""

    reconstruct = "reconstruct"
    """The test set is the measured scan itself: the network trains on those patterns and is
    scored on its reconstruction of them, as an iterative reconstruction is."""
    generalize = "generalize"
    """The test set is an independent realisation of the object, scanned with the training
    scan's geometry (same number of positions, same density, its own jitter and noise)."""


class PhaseAlignment(StrEnum):
    plane = "plane"
    mean = "mean"
    none = "none"


class StitchWeighting(StrEnum):
    probe = "probe"
    uniform = "uniform"


class Activation(StrEnum):
    """The generator's hidden activation. ``leaky_relu`` (slope 0.2 below 0): no unit can die;
    ``relu``: the wave-1 generator (saved models without an activation are ``relu``)."""
    leaky_relu = "leaky_relu"
    relu = "relu"


class PhaseSync(StrEnum):
    """How a network's patches get the constant phase no pattern measures (docs/physics.md §8.1).
    ``overlap``: agreement of overlapping patches; ``likelihood``: from there, the constants under
    which the stitched object best explains the measured counts; ``none``: as predicted."""
    none = "none"
    overlap = "overlap"
    likelihood = "likelihood"


class DtypePolicy(StrEnum):
    float32 = "float32"
    mixed_float16 = "mixed_float16"
    mixed_bfloat16 = "mixed_bfloat16"


class JitCompile(StrEnum):
    """``auto``: XLA on a GPU, TensorFlow's oneDNN path on a CPU (1.5× faster there, measured);
    ``true``/``false`` force it."""

    auto = "auto"
    true = "true"
    false = "false"


# --- Checks used by the sections -----------------------------------------------------------------


def _fail(key: str, value: object, reason: str) -> ConfigError:
    return ConfigError(f"{key}={value!r}: {reason}")


def _number(key: str, value: object, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, integer: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(key, value, "must be a number")
    if integer and not isinstance(value, int):
        raise _fail(key, value, "must be an integer")
    if not math.isfinite(value):
        raise _fail(key, value, "must be finite")
    if low is not None and (value <= low if low_open else value < low):
        raise _fail(key, value, f"must be {'>' if low_open else '>='} {low:g}")
    if high is not None and value > high:
        raise _fail(key, value, f"must be <= {high:g}")


def _checked(key: str, value: object, check: typing.Callable[[], Any]) -> Any:
    """Run a shared ``ptycho.checks`` check, re-raising its ValueError under the config key."""
    try:
        return check()
    except ValueError as error:
        raise _fail(key, value, str(error)) from None


def _npz_file(key: str, path: str, what: str) -> None:
    """An NPZ input must exist and be an NPZ (a zip archive): refused before any work."""
    if not Path(path).is_file():
        raise _fail(key, path, f"NPZ file not found ({what})")
    if not zipfile.is_zipfile(path):
        raise _fail(key, path, f"not a valid NPZ file (not a zip archive; {what})")


class _Section:
    """Shared behaviour of the frozen sections: coerce on construction, then check."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            kind = hints[item.name]
            choices = _enum_of(kind)
            if choices is not None and value is not None and not isinstance(value, choices):
                if choices is JitCompile and isinstance(value, bool | str):  # YAML's booleans,
                    value = str(value).lower()  # which Hydra's str field holds as 'True'/'False'
                try:
                    value = choices(value)
                except ValueError:
                    raise _fail(item.name, value, f"must be one of "
                                f"{[member.value for member in choices]}") from None
            elif _is_float(kind) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # 1000 and 1e3 are the same setting (and hash alike)
            object.__setattr__(self, item.name, value)
        self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` (``field=value: reason``) for a bad value."""


def _enum_of(kind: Any) -> type[StrEnum] | None:
    for option in typing.get_args(kind) or (kind,):
        if isinstance(option, type) and issubclass(option, StrEnum):
            return option
    return None


def _is_float(kind: Any) -> bool:
    return kind is float or float in typing.get_args(kind)


# --- The sections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectConfig(_Section):
    """What determines a simulated object (all of it enters the dataset-cache key)."""

    kind: ObjectKind = ObjectKind.lines
    size: int | None = None
    """Pixels per side; ``None``: twice the patch size N (ignored for ``npz``)."""
    phase: PhaseMode = PhaseMode.independent
    amplitude_min: float = 0.5
    amplitude_max: float = 1.0
    phase_max: float = math.pi / 2
    """Radians."""
    lines_density: float = 4.0
    """Line segments per 1000 px² of the drawing canvas (``lines`` only)."""
    grf_exponent: float = 3.0
    """Power-law exponent β of the spectrum ``|k|^-β`` (``grf`` only)."""
    path: str = ""
    """NPZ file holding the object (``npz`` only; its size then comes from the file)."""

    def check(self) -> None:
        if self.size is not None:
            _number("size", self.size, low=16, integer=True)
        for key in ("amplitude_min", "amplitude_max", "phase_max", "lines_density",
                    "grf_exponent"):
            _number(key, getattr(self, key))
        if not 0.0 < self.amplitude_min <= self.amplitude_max:
            raise _fail("amplitude_min", self.amplitude_min,
                        f"must satisfy 0 < amplitude_min <= amplitude_max={self.amplitude_max}")
        if not 0.0 <= self.phase_max <= math.pi:
            raise _fail("phase_max", self.phase_max, "must lie in [0, pi]")
        if self.lines_density <= 0:
            raise _fail("lines_density", self.lines_density, "must be > 0")
        if self.grf_exponent <= 0:
            raise _fail("grf_exponent", self.grf_exponent, "must be > 0")
        if self.kind == ObjectKind.npz:
            _npz_file("path", self.path, "data/object=npz")

    def fingerprint(self) -> dict[str, object]:
        """The fields that determine the object, with an NPZ named by its content hash."""
        return _fingerprint(self)


@dataclass(frozen=True)
class ProbeConfig(_Section):
    """What determines the probe (enters the dataset-cache key; an NPZ by its content hash)."""

    kind: ProbeKind = ProbeKind.disc
    radius_fraction: float = 0.17
    """Disc radius as a fraction of ``N``."""
    edge_sigma: float = 1.0
    """Gaussian blur of the disc edge, pixels."""
    phase_curvature: float = 2.0
    """Quadratic phase at the disc edge, radians. Nonzero by default: a real, centro-symmetric
    probe leaves the twin-image ambiguity o(r) ↔ conj(o(−r)) of a single pattern unresolved."""
    path: str = ""
    """NPZ file with a ``probeGuess`` (or ``probe``) ``(N, N)`` complex array (``npz`` only)."""

    def check(self) -> None:
        _number("radius_fraction", self.radius_fraction, low=0, low_open=True, high=0.5)
        _number("edge_sigma", self.edge_sigma, low=0)
        _number("phase_curvature", self.phase_curvature)
        if self.kind == ProbeKind.npz:
            _npz_file("path", self.path, "data.probe.kind=npz")

    def fingerprint(self) -> dict[str, object]:
        return _fingerprint(self)


@dataclass(frozen=True)
class ScanConfig(_Section):
    """How scan positions are drawn (enters the dataset-cache key)."""

    kind: ScanKind = ScanKind.raster
    """``raster``: a grid covering the object, as dense as the number of patterns allows."""
    margin: float = 0.0
    """Extra border (pixels) kept free beyond the patch half-width."""
    jitter: float = 1.0
    """Uniform jitter ± pixels applied to raster points (``raster`` only)."""
    subpixel: bool = True
    """False rounds positions to whole pixels (exact patch extraction and stitching)."""

    def check(self) -> None:
        _number("margin", self.margin, low=0)
        _number("jitter", self.jitter, low=0)


def _fingerprint(section: Any) -> dict[str, object]:
    fields = {item.name: getattr(section, item.name) for item in dataclasses.fields(section)}
    if section.kind == "npz":
        fields["path"] = hashlib.sha256(Path(section.path).read_bytes()).hexdigest()
    return fields


@dataclass(frozen=True)
class DataConfig(_Section):
    """The simulated data: object, probe, scan and how many patterns of each split."""

    object: ObjectConfig = field(default_factory=ObjectConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    n_train: int = 512
    """Diffraction patterns of the measured scan (the test scan, with ``generalize``, has as
    many)."""
    design: Design = Design.reconstruct
    """``reconstruct``: score the reconstruction of the measured patterns; ``generalize``: score
    a second object scanned the same way."""
    noise_seed: int | None = None
    """``None``: the job's seed."""
    cache: bool = True
    """Reuse simulated datasets from ``cache_dir`` (not part of the config hash)."""
    cache_dir: str | None = None
    """``None``: ``<project>/outputs/cache/datasets`` (not part of the config hash)."""

    def for_patch(self, N: int) -> DataConfig:
        """This section with the object's size resolved for patch size ``N`` (``None``: 2·N)."""
        if self.object.size is not None:
            return self
        return dataclasses.replace(self, object=dataclasses.replace(self.object, size=2 * N))

    def check(self) -> None:
        _number("n_train", self.n_train, low=1, integer=True)
        if self.noise_seed is not None:
            _number("noise_seed", self.noise_seed, low=0, integer=True)


@dataclass(frozen=True)
class ModelConfig(_Section):
    kind: ModelKind = ModelKind.pinn
    """``pinn``: physics-informed; ``baseline``: supervised (PtychoNN recipe); ``lsqml``,
    ``epie``: iterative reconstructions by pty-chi (the settings below ``trainable_probe``)."""
    bottleneck_filters: int = 256
    """Generator width at the 8×8 bottleneck (halved per level up)."""
    activation: Activation = Activation.leaky_relu
    """The generator's hidden activation (networks). With ``relu`` the amplitude decoder can die:
    measured on the quickstart (g=1, 1e3, seed 1) its output was one constant, 0.498, from the
    first epoch on (amplitude SSIM 0.62, ``nll_excess_per_photon`` +0.051); with ``leaky_relu``
    the same job trains (0.82, −0.027)."""
    trainable_probe: bool = False
    merge_iterations: int = 8
    """Conjugate-gradient steps of the overlap constraint's least-squares merge (g > 1; 0:
    normalised overlap-add). 8 leave true patches changed by about 2e-4 (bench/merge.py)."""
    # --- iterative arms (lsqml, epie) ---
    iterations: int = 100
    """Iterations (epochs of pty-chi: every pattern used once each)."""
    tolerance: float = 0.0
    """Stop once the Poisson NLL per photon changes by less than this between iterations;
    0: run every iteration."""
    batch_size: int = 16
    """Patterns per object update."""
    step_size: float = 1.0
    """Object step size (LSQML scales its solved optimal step by it; ePIE's step)."""
    alpha: float = 0.1
    """ePIE's α: the regularisation of its object update denominator."""
    object_init_noise: float = 0.0
    """Start from a flat object (1 + 0j) plus seeded complex Gaussian noise of this standard
    deviation; 0: exactly flat."""
    probe_update: bool = False
    """Refine the probe too (it starts from the true probe)."""
    position_correction: bool = False
    """Refine the scan positions too (they start from the true positions)."""
    device: Device = Device.auto
    """Where pty-chi runs: ``auto`` is the GPU when torch sees one, else the CPU."""

    def check(self) -> None:
        _number("bottleneck_filters", self.bottleneck_filters, low=1, integer=True)
        _number("merge_iterations", self.merge_iterations, low=0, integer=True)
        _number("iterations", self.iterations, low=1, integer=True)
        _number("tolerance", self.tolerance, low=0)
        _number("batch_size", self.batch_size, low=1, integer=True)
        _number("step_size", self.step_size, low=0, low_open=True)
        _number("alpha", self.alpha, low=0)
        _number("object_init_noise", self.object_init_noise, low=0)


ITERATIVE_SETTINGS = ("iterations", "tolerance", "batch_size", "step_size", "alpha",
                      "object_init_noise", "probe_update", "position_correction",
                      "device")
"""``model`` settings only the iterative arms use."""

NOT_FOR_ITERATIVE = ("gridsize", "loss", "train", "model.bottleneck_filters",
                     "model.activation", "model.trainable_probe", "model.merge_iterations",
                     "eval.batch_size", "eval.phase_sync", "eval.stitch_weighting")
"""Settings an iterative arm records but does not use: normalised away from its
``config_hash`` (a sweep over them does not run the same iterative job twice)."""


@dataclass(frozen=True)
class TrainConfig(_Section):
    epochs: int = 50
    """Maximum; early stopping may end sooner."""
    batch_size: int = 16
    """Groups per optimiser step."""
    learning_rate: float = 5e-4
    """Adam (1e-3 oscillates with this generator, measured)."""
    validation_fraction: float = 0.05
    """Groups held out for ``val_loss``."""
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_learning_rate: float = 1e-4
    early_stopping_patience: int = 5
    """Best weights restored. More than twice ``plateau_patience``: a lowered learning rate gets
    epochs to pay off (measured: with 3, the quickstart's g=1 NLL job at 1e4 stopped at epoch 11
    on a noisy validation loss and scored amplitude SSIM 0.75; run on, it improved to epoch 24 and
    0.87)."""
    min_delta: float = 1e-5
    """Least decrease of the monitored loss that counts as an improvement (plateau schedule and
    early stopping). The networks train on dose-scaled losses (``ptycho.training.dose_scale``:
    the PINN's NLL in nats per photon, its MAE relative to the mean amplitude), so this means the
    same at every dose. 1e-5 is what wave 1's absolute 1e-4 meant at the quickstart's 1e4
    photons (N=32: about 10 photons per pixel)."""
    jit_compile: JitCompile = JitCompile.auto
    dtype_policy: DtypePolicy = DtypePolicy.float32

    def check(self) -> None:
        _number("epochs", self.epochs, low=1, integer=True)
        _number("batch_size", self.batch_size, low=1, integer=True)
        _number("learning_rate", self.learning_rate, low=0, low_open=True)
        _number("validation_fraction", self.validation_fraction, low=0, high=0.5)
        _number("min_delta", self.min_delta, low=0)
        _number("plateau_factor", self.plateau_factor, low=0, low_open=True, high=1)
        _number("plateau_patience", self.plateau_patience, low=0, integer=True)
        _number("min_learning_rate", self.min_learning_rate, low=0)
        _number("early_stopping_patience", self.early_stopping_patience, low=0, integer=True)


@dataclass(frozen=True)
class EvalConfig(_Section):
    keep_fraction: float = 0.3
    """Central part of each patch stitched, fraction of N (at least the scan step is kept)."""
    border: int = 4
    """Pixels trimmed from the scanned region."""
    phase_alignment: PhaseAlignment = PhaseAlignment.plane
    subpixel_registration: bool = False
    stitch_weighting: StitchWeighting = StitchWeighting.probe
    """How overlapping patches are averaged in the stitch: ``probe`` weights each patch pixel by
    the probe intensity ``|P|²`` (the light that measured it), ``uniform`` weights the central
    part evenly (wave 1). The scored region is the same for both (docs/physics.md §8.1)."""
    phase_sync: PhaseSync = PhaseSync.likelihood
    """Before stitching a network's patches, set each patch's constant phase (which no
    diffraction pattern measures): ``overlap`` by agreement with its overlapping neighbours,
    ``likelihood`` then by the measured counts of the whole scan (the default), ``none`` not at
    all (docs/physics.md §8.1). Iterative arms reconstruct one object and do not need it."""
    batch_size: int = 64
    """Inference batch (groups)."""
    n_diffraction: int = 4
    """Patterns shown in the diffraction figure (not part of the config hash)."""
    crb: bool = True
    """Compute the Cramér–Rao bound of the test scan (docs/physics.md §11): ``amp_mse_crb``,
    ``phase_mse_crb`` and the efficiencies ``*_crb_efficiency`` (not part of the config hash)."""
    crb_samples: int = 16
    """Hutchinson probes per part where the bound is matrix-free (above
    ``ptycho.evaluation.limit.DENSE_LIMIT`` parameters)."""

    def check(self) -> None:
        _number("keep_fraction", self.keep_fraction, low=0, low_open=True, high=1)
        _number("border", self.border, low=0, integer=True)
        _number("batch_size", self.batch_size, low=1, integer=True)
        _number("n_diffraction", self.n_diffraction, low=1, integer=True)
        _number("crb_samples", self.crb_samples, low=2, integer=True)


@dataclass(frozen=True)
class TrackingConfig(_Section):
    uri: str | None = None
    """``None``: ``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project>/outputs/mlflow.db``."""
    artifact_location: str | None = None
    """``None``: beside a SQLite store (``<folder>/mlartifacts``); the server's for http."""
    experiment: str = "default"
    """One MLflow experiment per study."""
    log_model: bool = True
    """Store the trained model folder as an artifact."""
    stale_after_s: float = 600.0
    """A RUNNING run with no heartbeat this long (its process on another host) counts as dead on
    resume: marked FAILED and its job run again. Same host: a dead process id suffices."""
    system_metrics_s: float = 10.0
    """Sampling interval (s) of MLflow's system metrics on each job run (CPU, memory; GPU where
    there is one): the UI's System metrics tab. 0: off."""

    def check(self) -> None:
        if self.uri is not None:
            check_tracking_uri("uri", self.uri)
        if not str(self.experiment).strip():
            raise _fail("experiment", self.experiment, "must not be empty")
        # Heartbeats come every 60 s: anything shorter than three would call live runs stale.
        _number("stale_after_s", self.stale_after_s, low=180)
        _number("system_metrics_s", self.system_metrics_s, low=0)


def check_tracking_uri(key: str, uri: str) -> str:
    """A tracking URI MLflow can open: a scheme from :data:`TRACKING_SCHEMES` (``sqlite:///…``,
    ``http://host:port``, …) or a plain folder path; raises :class:`ConfigError` otherwise."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if "://" in uri and scheme not in TRACKING_SCHEMES:
        raise _fail(key, uri, f"unsupported tracking URI scheme {scheme!r}; use one of "
                    f"{[f'{s}://' for s in TRACKING_SCHEMES]} or a folder path")
    return uri


@dataclass(frozen=True)
class JobConfig(_Section):
    """One sweep point, validated: the axes, the run switches and one section per concern."""

    N: int = 64
    """Patch side (pixels), a power of two >= 16."""
    gridsize: int = 1
    """``C = gridsize²`` neighbouring patterns per sample."""
    dose: float = 1e6
    """Expected photons per diffraction pattern."""
    loss: Loss = Loss.poisson_nll
    """The PINN's loss (the baseline always uses supervised MAE)."""
    seed: int = 0
    """Object, scan positions, noise and weights."""
    resume: bool = True
    """Skip jobs whose ``config_hash`` already has a FINISHED run."""
    dry_run: bool = False
    """Validate and print what would run; no training, no runs."""
    isolate: bool = False
    """Run each job's work in a fresh child process (its memory, GPU too, freed at its end)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def check(self) -> None:
        _checked("N", self.N, lambda: check_patch_size(self.N))
        _checked("gridsize", self.gridsize, lambda: check_gridsize(self.gridsize))
        _checked("dose", self.dose, lambda: check_dose(self.dose))
        if self.dose > MAX_DOSE:
            raise _fail("dose", self.dose, f"must be <= {MAX_DOSE:g} photons per pattern: "
                        "beyond that float32 training overflows (measured: NaN from about 1e21 "
                        "at N=16)")
        _number("seed", self.seed, low=0, integer=True)
        object.__setattr__(self, "data", self.data.for_patch(self.N))
        data = self.data
        if data.object.kind != ObjectKind.npz and data.object.size < self.N + 1:
            raise _fail("data.object.size", data.object.size,
                        f"smaller than a patch of N={self.N} (needs >= {self.N + 1})")
        if self.model.kind.iterative:  # gridsize and train.* are not used: nothing to check
            return
        channels = self.gridsize**2
        n_val = validation_count(data.n_train, self.train.validation_fraction)
        if data.n_train < channels or 0 < n_val < channels:
            raise _fail("data.n_train", data.n_train,
                        f"gridsize={self.gridsize} needs at least {channels} patterns per group "
                        f"in training and in validation ({n_val} held out)")
        if data.n_train - n_val < self.train.batch_size:
            raise _fail("train.batch_size", self.train.batch_size,
                        f"exceeds the {data.n_train - n_val} training groups "
                        f"(data.n_train={data.n_train}, {n_val} held out for validation)")

    # --- derived --------------------------------------------------------------------------------

    @property
    def training_loss(self) -> str:
        """What the reconstruction optimises: the PINN's ``loss``, the baseline's supervised MAE,
        LSQML's Poisson likelihood (``lsqml_poisson``) or ePIE's amplitude projection
        (``epie``)."""
        kind = self.model.kind
        if kind == ModelKind.pinn:
            return str(self.loss)
        return {ModelKind.baseline: "supervised_mae", ModelKind.lsqml: "lsqml_poisson",
                ModelKind.epie: "epie"}[kind]

    def resolved(self) -> dict[str, Any]:
        """The whole config as plain JSON-able values (enums as strings), for logging."""
        return _plain_values(dataclasses.asdict(self))

    @property
    def config_hash(self) -> str:
        return config_hash(self.resolved())

    def name(self, extra: typing.Mapping[str, str] | None = None) -> str:
        """Run name from the axes, plus swept settings the axes do not show (``extra``)."""
        return run_name(self.N, self.gridsize, self.dose, str(self.loss), str(self.model.kind),
                        self.seed, extra)

    @property
    def arm(self) -> str:
        """What a dose-response curve is drawn for, as the report labels it: ``N64 g2
        poisson_nll pinn``, an iterative arm ``N64 lsqml`` (it uses neither gridsize nor loss),
        ``… generalize`` when scored on a second object. Logged as the run's tag ``arm`` so the
        MLflow UI's charts can group by it."""
        design = "" if self.data.design == Design.reconstruct else f" {self.data.design}"
        if self.model.kind.iterative:
            return f"N{self.N} {self.model.kind}{design}"
        return f"N{self.N} g{self.gridsize} {self.loss} {self.model.kind}{design}"


def _plain_values(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain_values(item) for key, item in value.items()}
    if isinstance(value, StrEnum):
        return value.value
    return value


# --- Names and hashes ----------------------------------------------------------------------------


def format_dose(dose: float) -> str:
    """``1e4`` for 10000.0, ``2.5e3`` for 2500.0: compact and sortable by eye."""
    mantissa, exponent = f"{dose:.3e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def run_name(N: int, gridsize: int, dose: float, loss: str, model: str, seed: int,
             extra: typing.Mapping[str, str] | None = None) -> str:
    """Child-run name from its axes, e.g. ``N64_g2_dose1e4_poisson_nll_pinn_s0``; ``extra``
    (swept settings that are not axes) is appended, e.g. ``…_s0_train.epochs=40``."""
    name = f"N{N}_g{gridsize}_dose{format_dose(dose)}_{loss}_{model}_s{seed}"
    for key, value in (extra or {}).items():
        name += f"_{key}={value}"
    return name


NAMING_AXES = ("N", "gridsize", "dose", "loss", "model", "model.kind", "seed")
"""Override keys the run name already shows."""

_NOT_HASHED = ("tracking", "resume", "dry_run", "isolate", "hydra", "data.cache",
               "data.cache_dir", "eval.n_diffraction", "eval.crb", "eval.crb_samples")
"""Keys that do not change a job's numbers: where results go, how the job is run, the caching
of its inputs, how many patterns one figure shows, and whether the physical limit is computed
beside the reconstruction's metrics."""


def config_hash(resolved: typing.Mapping[str, Any]) -> str:
    """sha256 (16 hex) of the resolved config without the keys of :data:`_NOT_HASHED` (dotted
    paths) and the settings its model does not use (an iterative arm ignores
    :data:`NOT_FOR_ITERATIVE`; the networks ignore :data:`ITERATIVE_SETTINGS`): two jobs with
    equal hashes compute the same numbers."""
    relevant = json.loads(json.dumps(dict(resolved), default=str))
    kind = (relevant.get("model") or {}).get("kind", ModelKind.pinn.value)
    unused = (NOT_FOR_ITERATIVE if kind in (ModelKind.lsqml.value, ModelKind.epie.value)
              else tuple(f"model.{key}" for key in ITERATIVE_SETTINGS))
    for key in (*_NOT_HASHED, *unused):
        *parents, leaf = key.split(".")
        node = relevant
        for parent in parents:
            node = node.get(parent, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    blob = json.dumps(relevant, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --- Building and validating ---------------------------------------------------------------------


def _build(cls: type, values: typing.Mapping[str, Any], path: str) -> Any:
    """Construct section ``cls`` from plain ``values``; errors get the section's path."""
    hints = typing.get_type_hints(cls)
    known = {item.name for item in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        key = f"{path}{unknown[0]}"
        raise ConfigError(f"{key}: not a setting (known in {path.rstrip('.') or 'the top level'}"
                          f": {sorted(known)})")
    arguments: dict[str, Any] = {}
    for name, value in values.items():
        kind = hints[name]
        if isinstance(kind, type) and issubclass(kind, _Section) and isinstance(value, dict):
            value = _build(kind, value, f"{path}{name}.")
        arguments[name] = value
    try:
        return cls(**arguments)
    except ConfigError as error:
        raise ConfigError(f"{path}{error}") from None
    except TypeError as error:  # a wrong shape, e.g. a value where a section belongs
        raise ConfigError(f"{path.rstrip('.')}: {error}") from None


def validate(cfg: DictConfig | typing.Mapping[str, Any]) -> JobConfig:
    """Check every value of a composed config; return the frozen :class:`JobConfig`.

    Args:
        cfg: Hydra's composed config, or plain nested dicts (a test, a notebook, a pickled
            config); missing keys take the schema's defaults, and a ``hydra`` key is ignored.

    Raises:
        ConfigError: naming the first bad key and its value.
    """
    if isinstance(cfg, DictConfig):
        try:
            plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        except Exception as error:  # omegaconf's own errors name the key
            raise ConfigError(str(error).splitlines()[0]) from None
    else:
        plain = json.loads(json.dumps(dict(cfg), default=str))
    assert isinstance(plain, dict)
    plain.pop("hydra", None)
    return _build(JobConfig, plain, "")


# --- Hydra's structured config, generated from the sections --------------------------------------

_HYDRA_PREFIX = "Hydra"
_generated: dict[str, type] = {}


def hydra_schema() -> type:
    """Hydra's structured config for :class:`JobConfig`: the same fields, types and defaults, not
    frozen (Hydra writes overrides into it). Generated once per process; the classes are served
    by this module's ``__getattr__`` under ``Hydra<Section>`` so a pickled config (joblib's
    workers) finds them."""
    return _hydra_class(JobConfig)


def _hydra_class(cls: type) -> type:
    name = _HYDRA_PREFIX + cls.__name__
    if name in _generated:
        return _generated[name]
    hints = typing.get_type_hints(cls)
    fields: list[tuple[str, Any, Any]] = []
    for item in dataclasses.fields(cls):
        kind = hints[item.name]
        if isinstance(kind, type) and issubclass(kind, _Section):
            nested = _hydra_class(kind)
            fields.append((item.name, nested, field(default_factory=nested)))
            continue
        if _enum_of(kind) is JitCompile:
            # YAML's true/false are booleans: the section turns strings into choices
            kind = str
        missing = item.default is dataclasses.MISSING
        default = item.default_factory() if missing else item.default  # type: ignore[misc]
        fields.append((item.name, kind, field(default=default)))
    generated = dataclasses.make_dataclass(name, fields)
    generated.__module__ = __name__
    generated.__doc__ = f"Hydra's (mutable) twin of :class:`{cls.__name__}`."
    _generated[name] = generated
    return generated


def __getattr__(name: str) -> type:
    for cls in (JobConfig, DataConfig, ObjectConfig, ProbeConfig, ScanConfig, ModelConfig,
                TrainConfig, EvalConfig, TrackingConfig):
        if name == _HYDRA_PREFIX + cls.__name__:
            return _hydra_class(cls)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_configs() -> None:
    """Register the generated schema with Hydra's ConfigStore as ``ptycho_schema``, the first
    entry of ``conf/config.yaml``'s defaults: every composed config is then typed and closed.
    Called by the entry point, never at import."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=hydra_schema())
