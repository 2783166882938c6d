"""Stateless model factories: thin physics layers, the generator, the PINN and the baseline."""

from ptycho.models.factories import (
    MODEL_KINDS,
    Models,
    ModelSpec,
    build_baseline,
    build_models,
    build_pinn,
    initial_log_scale,
)
from ptycho.models.inputs import (
    baseline_targets,
    compute_input_scale,
    grouped,
    model_inputs,
    pinn_targets,
)
from ptycho.models.layers import (
    ComplexPatches,
    FarFieldIntensity,
    IntensityScale,
    OverlapConstraint,
    ProbeIllumination,
)
from ptycho.models.networks import build_generator, level_filters
from ptycho.models.saving import TrainedModel, load_model, save_model

__all__ = [
    "MODEL_KINDS", "ComplexPatches", "FarFieldIntensity", "IntensityScale", "ModelSpec", "Models",
    "OverlapConstraint", "ProbeIllumination", "TrainedModel", "baseline_targets", "build_baseline",
    "build_generator", "build_models", "build_pinn", "compute_input_scale", "grouped",
    "initial_log_scale", "level_filters", "load_model", "model_inputs", "pinn_targets",
    "save_model"
]
