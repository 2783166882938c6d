"""One job's settings, validated: :class:`JobConfig` and :func:`validate`, the one way in.

Config enters once, at the edge: Hydra composes ``conf/`` against a structured config generated
from these classes (:mod:`ptycho.config.structured`), :func:`validate` builds the frozen
:class:`JobConfig` whose sections check their own values, and a bad value raises
:class:`ConfigError` naming the key (with its section path) and the value, before any work.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptycho.checks import check_dose, check_gridsize, check_patch_size, validation_count
from ptycho.config.arms import ArmSettings, field_names, settings_class, settings_classes
from ptycho.config.arms.pinn import PinnSettings
from ptycho.config.files import object_array, probe_array
from ptycho.config.hashing import config_hash
from ptycho.config.naming import arm_label, condition_label, refinement_label, run_name
from ptycho.config.protocol import tuning_status
from ptycho.config.sections import (
    LIKELIHOOD_SYNC_EPOCHS,
    MAX_DOSE,
    MIN_DOSE,
    ConfigError,
    DataConfig,
    DataSource,
    Design,
    EvalConfig,
    Loss,
    ObjectKind,
    PhaseSync,
    ProbeKind,
    ProbeStart,
    Section,
    TrackingConfig,
    TrainConfig,
    TruthFree,
    check_number,
    checked,
    fail,
)

__all__ = ["JobConfig", "validate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobConfig(Section):
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
    model: ArmSettings = field(default_factory=PinnSettings)
    """The arm and its settings: one of ``conf/model/`` (``model=pinn|baseline|lsqml|…``)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def check(self) -> None:
        checked("N", self.N, lambda: check_patch_size(self.N))
        checked("gridsize", self.gridsize, lambda: check_gridsize(self.gridsize))
        checked("dose", self.dose, lambda: check_dose(self.dose))
        if self.dose > MAX_DOSE:
            raise fail("dose", self.dose, f"must be <= {MAX_DOSE:g} photons per pattern: "
                       "beyond that float32 training overflows (measured: NaN from about 1e21 "
                       "at N=16)")
        if self.dose < MIN_DOSE:
            raise fail("dose", self.dose, f"must be >= {MIN_DOSE:g} photon per pattern (below, "
                       "most patterns hold no photon and the data cannot be normalised)")
        check_number("seed", self.seed, low=0, integer=True)
        object.__setattr__(self, "data", self.data.for_patch(self.N))
        self._check_inputs()
        probe = self.data.probe
        if probe.kind == ProbeKind.focused and probe.aperture_radius >= self.N / 2:
            raise fail("data.probe.aperture_radius", probe.aperture_radius,
                       f"must be < N/2 = {self.N / 2:g} detector pixels (the aperture's image "
                       "must fit on the detector)")
        if self.data.probe_guess.kind == ProbeStart.perturbed and probe.kind == ProbeKind.npz:
            raise fail("data.probe_guess.kind", "perturbed", "needs a probe model to perturb "
                       "(data.probe.kind=disc or focused), not an NPZ probe: use estimate")
        if self.data.detector.beamstop_radius >= self.N / 2:
            raise fail("data.detector.beamstop_radius", self.data.detector.beamstop_radius,
                       f"must be < N/2 = {self.N / 2:g} detector pixels (it would mask the whole "
                       "detector)")
        if self.eval.phase_sync == PhaseSync.auto:  # resolved here: runs record the choice
            chosen = (PhaseSync.likelihood if self.train.epochs >= LIKELIHOOD_SYNC_EPOCHS
                      else PhaseSync.overlap)
            object.__setattr__(self, "eval", dataclasses.replace(self.eval, phase_sync=chosen))
        data = self.data
        if data.object.kind != ObjectKind.npz and data.object.size < self.N + 1:
            raise fail("data.object.size", data.object.size,
                       f"smaller than a patch of N={self.N} (needs >= {self.N + 1})")
        if self.model.supervised and data.design == Design.reconstruct:
            raise fail("data.design", str(data.design),
                       f"model={self.model.kind} trains on the true patches of its training "
                       "scan, which with design reconstruct is the scan it is scored on (its "
                       "scores would be of its own training targets): use "
                       "data.design=generalize (trained on one object, scored on another)")
        if "train" not in self.model.uses:  # gridsize and train.* are not used: nothing to check
            return
        channels = self.gridsize**2
        n_val = validation_count(data.n_train, self.train.validation_fraction)
        if data.n_train < channels or 0 < n_val < channels:
            raise fail("data.n_train", data.n_train,
                       f"gridsize={self.gridsize} needs at least {channels} patterns per group "
                       f"in training and in validation ({n_val} held out)")
        if data.n_train - n_val < self.train.batch_size:
            raise fail("train.batch_size", self.train.batch_size,
                       f"exceeds the {data.n_train - n_val} training groups "
                       f"(data.n_train={data.n_train}, {n_val} held out for validation)")

    def _check_inputs(self) -> None:
        """What depends on the data's source: a user's probe file against N, a measured scan
        against the arm, and ``eval.truth_free=auto`` resolved (runs record the choice)."""
        if self.data.probe.kind == ProbeKind.npz and self.data.source == DataSource.simulate:
            shape = probe_array(self.data.probe.path).shape
            if shape != (self.N, self.N):
                raise fail("data.probe.path", self.data.probe.path,
                           f"holds a probe of shape {shape}, not ({self.N}, {self.N}) for N="
                           f"{self.N}")
        if self.data.object.kind == ObjectKind.npz and self.data.source == DataSource.simulate:
            shape = object_array(self.data.object.path).shape
            if min(shape) < self.N + 1:
                raise fail("data.object.path", self.data.object.path,
                           f"holds an object of shape {shape}, smaller than a patch of N="
                           f"{self.N} (needs >= {self.N + 1} per side)")
        measured = self.data.source == DataSource.file
        if measured and self.model.supervised:
            raise fail("model.kind", self.model.kind, "trains on the true patches, which a "
                       "measured scan does not have")
        if self.eval.reference != "none":
            try:
                reference = settings_class(self.eval.reference)
            except ValueError as error:
                raise fail("eval.reference", self.eval.reference, f"{error} or none") from None
            if reference.supervised:
                raise fail("eval.reference", self.eval.reference, "trains on the true patches: "
                           "a reference must reconstruct from the counts alone")
        if self.eval.truth_free == TruthFree.auto:
            chosen = TruthFree.on if measured else TruthFree.off
            object.__setattr__(self, "eval", dataclasses.replace(self.eval, truth_free=chosen))

    # --- derived from the arm's declaration ------------------------------------------------------

    @property
    def training_loss(self) -> str:
        """What the reconstruction optimises: the PINN's ``loss``, else the arm's objective."""
        return self.model.training_loss(str(self.loss))

    @property
    def unused(self) -> tuple[str, ...]:
        """The job's settings its arm does not read (recorded, not hashed)."""
        return self.model.unused()

    def resolved(self) -> dict[str, Any]:
        """The whole config as plain JSON-able values (enums as strings), for logging."""
        return _plain_values(dataclasses.asdict(self))

    @property
    def config_hash(self) -> str:
        return config_hash(self.resolved(), self.unused)

    def name(self, extra: typing.Mapping[str, str] | None = None) -> str:
        """Run name from the axes its arm uses, plus swept settings they do not show."""
        return run_name(self.resolved(), self.unused, extra)

    @property
    def tuning(self) -> str:
        """Whether the settings were chosen on this job's data (tag ``tuning``:
        :func:`ptycho.config.protocol.tuning_status`)."""
        if self.data.source == DataSource.file:
            return "measured"
        return tuning_status(str(self.data.object.kind), self.seed)

    @property
    def arm(self) -> str:
        """The report's label of what a dose-response curve is drawn for (tag ``arm``)."""
        return arm_label(self.resolved(), self.unused)

    @property
    def condition(self) -> str:
        """What in the experiment was not ideal (tag ``condition``)."""
        return condition_label(self.resolved())

    @property
    def refinement(self) -> str:
        """What the arm refines besides the object (tag ``refinement``; ``""``: nothing)."""
        return refinement_label(self.resolved())


def _plain_values(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain_values(item) for key, item in value.items()}
    if isinstance(value, StrEnum):
        return value.value
    return value


def _build(cls: type, values: typing.Mapping[str, Any], path: str) -> Any:
    """Construct section ``cls`` from plain ``values``; errors get the section's path."""
    hints = typing.get_type_hints(cls)
    known = field_names(cls)
    unknown = sorted(set(values) - known)
    if unknown:
        key = f"{path}{unknown[0]}"
        raise ConfigError(f"{key}: not a setting (known in {path.rstrip('.') or 'the top level'}"
                          f": {sorted(known)})")
    arguments: dict[str, Any] = {}
    for name, value in values.items():
        kind = hints[name]
        if kind is ArmSettings and isinstance(value, dict):
            value = _build_arm(value, f"{path}{name}.")
        elif isinstance(kind, type) and issubclass(kind, Section) and isinstance(value, dict):
            value = _build(kind, value, f"{path}{name}.")
        arguments[name] = value
    try:
        return cls(**arguments)
    except ConfigError as error:
        raise ConfigError(f"{path}{error}") from None
    except TypeError as error:  # a wrong shape, e.g. a value where a section belongs
        raise ConfigError(f"{path.rstrip('.')}: {error}") from None


def _build_arm(values: typing.Mapping[str, Any], path: str) -> ArmSettings:
    """The settings of the arm ``values["kind"]`` names. Unset keys (``None``: Hydra's schema
    holds every arm's keys) take the arm's defaults; keys of other arms (a preset's settings for
    the network, an LSQML job of its sweep) are recorded in the log and not used."""
    kind = values.get("kind") or PinnSettings.kind
    try:
        cls = settings_class(str(kind))
    except ValueError as error:
        raise fail(f"{path}kind", kind, str(error)) from None
    own = field_names(cls)
    every = set().union(*(field_names(other) for other in settings_classes().values()))
    unknown = sorted(set(values) - every)
    if unknown:
        raise ConfigError(f"{path}{unknown[0]}: not a setting of any arm ({kind}'s: "
                          f"{sorted(own)})")
    foreign = sorted(key for key, value in values.items() if key not in own and value is not None)
    if foreign:
        log.info("%s: settings of other arms, not used by %s", ", ".join(
            f"{path}{key}" for key in foreign), kind)
    return _build(cls, {key: value for key, value in values.items()
                        if key in own and value is not None}, path)


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
