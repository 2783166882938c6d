"""The one schema of a job's settings, and the one way in (:func:`validate`).

- :mod:`~ptycho.config.sections`: the frozen sections and their choices (data, train, eval,
  tracking); :mod:`~ptycho.config.arms`: one settings class per arm (the ``model`` section),
  each declaring what of the job it reads; :mod:`~ptycho.config.job`: :class:`JobConfig` and
  :func:`validate`;
- :mod:`~ptycho.config.naming` and :mod:`~ptycho.config.hashing`: run names, arm labels and
  ``config_hash``, derived from the arms' declarations;
- :mod:`~ptycho.config.structured`: Hydra's structured config, generated from all of them.

The YAML files under ``conf/`` repeat these defaults for the reader (tests hold them equal).
Nothing here imports TensorFlow, Hydra or the science (``tests/test_structure.py``).
"""

from ptycho.config.arms import ARM_DEPENDENT, ArmSettings, settings_class, settings_classes
from ptycho.config.hashing import config_hash
from ptycho.config.job import JobConfig, validate
from ptycho.config.naming import NAMING_AXES, arm_label, format_dose, run_name
from ptycho.config.sections import (
    CONDITION_SECTIONS,
    LIKELIHOOD_SYNC_EPOCHS,
    MAX_DOSE,
    MEASURED_SUFFIXES,
    SEARCH_OBJECTIVES,
    Activation,
    ConfigError,
    DataConfig,
    DataSource,
    Design,
    DetectorConfig,
    Device,
    DtypePolicy,
    EvalConfig,
    JitCompile,
    Loss,
    MeasuredConfig,
    ObjectConfig,
    ObjectKind,
    PhaseAlignment,
    PhaseMode,
    PhaseSync,
    PositionErrorConfig,
    ProbeConfig,
    ProbeGuessConfig,
    ProbeKind,
    ProbeStart,
    ScanConfig,
    ScanKind,
    Schedule,
    Simulator,
    StitchWeighting,
    Stopping,
    TrackingConfig,
    TrainConfig,
    TruthFree,
    check_tracking_uri,
)

__all__ = [
    "ARM_DEPENDENT", "CONDITION_SECTIONS", "LIKELIHOOD_SYNC_EPOCHS", "MAX_DOSE",
    "MEASURED_SUFFIXES", "NAMING_AXES", "SEARCH_OBJECTIVES", "Activation", "ArmSettings",
    "ConfigError", "DataConfig", "DataSource", "Design", "DetectorConfig", "Device", "DtypePolicy",
    "EvalConfig", "JitCompile", "JobConfig", "Loss", "MeasuredConfig", "ObjectConfig",
    "ObjectKind", "PhaseAlignment", "PhaseMode", "PhaseSync", "PositionErrorConfig", "ProbeConfig",
    "ProbeGuessConfig", "ProbeKind", "ProbeStart", "ScanConfig", "ScanKind", "Schedule",
    "Simulator", "StitchWeighting", "Stopping", "TrackingConfig", "TrainConfig", "TruthFree",
    "arm_label", "check_tracking_uri", "config_hash", "format_dose", "run_name", "settings_class",
    "settings_classes", "validate",
]
