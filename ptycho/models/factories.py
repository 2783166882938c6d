"""Model factories: every call builds fresh models from its keyword arguments alone.

Nothing here reads a global or caches a model, a layer or a variable between calls, so models of
any ``N`` and ``gridsize`` can be built one after another in one process.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import keras
import numpy as np

from ptycho.checks import check_gridsize, check_patch_size, check_positive_int
from ptycho.models.layers import (
    ComplexPatches,
    DetectorResponse,
    FarFieldIntensity,
    IntensityScale,
    OverlapConstraint,
    ProbeIllumination,
)
from ptycho.models.networks import build_generator
from ptycho.physics import Detector

__all__ = [
    "MODEL_KINDS", "ModelSpec", "Models", "build_baseline", "build_models", "build_pinn",
    "initial_log_scale"
]

MODEL_KINDS = ("pinn", "baseline")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model's architecture (weights are stored separately)."""

    kind: str
    N: int
    gridsize: int
    bottleneck_filters: int
    canvas_size: int = 0
    """Overlap-constraint canvas side (PINN with gridsize > 1), else 0."""
    trainable_probe: bool = False
    log_scale: float = 0.0
    """Initial ``log s`` of the intensity scale (PINN)."""
    merge_iterations: int = 0
    """Conjugate-gradient steps of the overlap constraint's merge (PINN with gridsize > 1); 0
    (overlap-add) for models saved before the merge had steps."""
    activation: str = "relu"
    """The generator's hidden activation; ``relu`` for models saved before it was recorded."""
    detector: bool = False
    """The PINN's counts pass through a :class:`DetectorResponse` (a mask or a background);
    its mask is a weight, loaded with the others."""
    background: float = 0.0
    """The detector's background, photons per pixel (with ``detector``)."""
    probe_learning_rate_scale: float = 1.0
    """The probe's learning rate relative to the network's (``trainable_probe``)."""

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        check_patch_size(self.N)
        check_gridsize(self.gridsize)
        check_positive_int(self.bottleneck_filters, "bottleneck_filters")
        if self.kind == "pinn" and self.gridsize > 1 and self.canvas_size < self.N + 2:
            raise ValueError(
                f"canvas_size must be >= N + 2 = {self.N + 2} for gridsize {self.gridsize}, "
                f"got {self.canvas_size!r}"
            )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(eq=False)
class Models:
    """A training model and an inference model that share their weights.

    Attributes:
        spec: how to rebuild them.
        train: what :func:`ptycho.training.fit` optimises. PINN: inputs ``diffraction
            (B, N, N, C)`` (+ ``offsets (B, C, 2)`` for g > 1) → expected counts ``(B, N, N, C)``
            photons. Baseline: ``diffraction`` → ``[amplitude, phase]`` stacked on the channel
            axis, ``(B, N, N, 2C)``.
        inference: ``diffraction`` → ``[amplitude (B, N, N, C), phase (B, N, N, C) radians]``.
    """

    spec: ModelSpec
    train: keras.Model
    inference: keras.Model

    @property
    def params_count(self) -> int:
        """Trainable parameters of the training model."""
        return int(sum(np.prod(w.shape) for w in self.train.trainable_weights))

    @property
    def input_names(self) -> list[str]:
        return [tensor.name for tensor in self.train.inputs]


def initial_log_scale(measured_dose: float, probe: np.ndarray, amplitude: float = 0.5) -> float:
    """``log s`` that makes an object of constant ``amplitude`` (the sigmoid's midpoint) produce
    ``measured_dose`` photons per pattern: ``s² = dose / (amplitude² · Σ|P|²)`` (Parseval)."""
    probe_energy = float(np.sum(np.abs(np.asarray(probe, np.complex128)) ** 2))
    if not measured_dose > 0 or not probe_energy > 0:
        raise ValueError(
            f"initial_log_scale needs a positive dose and probe energy, got dose={measured_dose!r}"
            f" and probe energy {probe_energy!r}")
    return 0.5 * math.log(measured_dose / (amplitude**2 * probe_energy))


def _generator(spec: ModelSpec) -> tuple[keras.KerasTensor, keras.KerasTensor, keras.KerasTensor]:
    """A fresh generator of ``spec`` on a new input: ``(diffraction, amplitude, phase)``."""
    generator = build_generator(N=spec.N, gridsize=spec.gridsize, activation=spec.activation,
                                bottleneck_filters=spec.bottleneck_filters)
    diffraction = keras.Input((spec.N, spec.N, spec.gridsize**2), name="diffraction")
    return diffraction, *generator(diffraction)


def build_pinn(*, N: int, gridsize: int, probe: np.ndarray | None, bottleneck_filters: int,
               activation: str, merge_iterations: int, canvas_size: int = 0,
               log_scale: float = 0.0, trainable_probe: bool = False,
               detector: Detector | None = None,
               probe_learning_rate_scale: float = 1.0) -> Models:
    """Fresh physics-informed network (docs/physics.md §6).

    Args:
        N: patch side, a power of two ≥ 16.
        gridsize: g ≥ 1; groups of ``C = g²`` patterns.
        probe: ``(N, N)`` complex initial probe (``None`` only when weights are loaded next).
        canvas_size: overlap-constraint canvas side for g > 1 (see
            :func:`ptycho.data.canvas_size`); ignored for g = 1.
        log_scale: initial ``log s`` of the intensity scale (:func:`initial_log_scale`).
        trainable_probe: refine the probe during training.
        bottleneck_filters: generator width at the 8×8 bottleneck.
        merge_iterations: conjugate-gradient steps of the overlap constraint's least-squares
            merge (:func:`ptycho.physics.merge_patches`); 0: normalised overlap-add.
        activation: the generator's hidden activation (:class:`ptycho.config.Activation`).
        detector: the detector's mask and background, applied to the expected counts
            (``None`` or an ideal one: no layer, the counts as they reach the detector).
        probe_learning_rate_scale: the probe's learning rate relative to the network's
            (:class:`~ptycho.models.layers.ProbeIllumination`).
    """
    measured = detector is not None and not detector.ideal
    spec = ModelSpec(
        kind="pinn", N=N, gridsize=gridsize, bottleneck_filters=bottleneck_filters,
        canvas_size=int(canvas_size) if gridsize > 1 else 0, trainable_probe=trainable_probe,
        log_scale=float(log_scale), merge_iterations=int(merge_iterations),
        activation=str(activation), detector=measured,
        background=detector.background if measured else 0.0,
        probe_learning_rate_scale=float(probe_learning_rate_scale))
    return _assemble_pinn(spec, probe, detector.mask if measured else None)


def _assemble_pinn(spec: ModelSpec, probe: np.ndarray | None,
                   mask: np.ndarray | None) -> Models:
    """The PINN of ``spec``: its probe weights start at ``probe``, its detector's mask
    (``spec.detector``) at ``mask`` (``None``: all pixels, until weights are loaded)."""
    channels = spec.gridsize**2
    diffraction, amplitude, phase = _generator(spec)
    patches = ComplexPatches(name="object_patches")(amplitude, phase)
    inputs = [diffraction]
    if spec.gridsize > 1:
        offsets = keras.Input((channels, 2), name="offsets")
        inputs.append(offsets)
        patches = OverlapConstraint(spec.N, spec.gridsize, spec.canvas_size, spec.merge_iterations,
                                    name="overlap_constraint")(patches, offsets)
    exit_wave = ProbeIllumination(spec.N, trainable_probe=spec.trainable_probe, probe=probe,
                                  learning_rate_scale=spec.probe_learning_rate_scale,
                                  name="probe_illumination")(patches)
    far_intensity = FarFieldIntensity(name="far_field")(exit_wave)
    counts = IntensityScale(spec.log_scale, name="intensity_scale")(far_intensity)
    if spec.detector:
        counts = DetectorResponse(spec.N, mask, spec.background, name="detector")(counts)
    train = keras.Model(inputs if len(inputs) > 1 else diffraction, counts,
                        name=f"pinn_N{spec.N}_g{spec.gridsize}")
    inference = keras.Model(diffraction, [amplitude, phase], name="pinn_inference")
    return Models(spec=spec, train=train, inference=inference)


def build_baseline(*, N: int, gridsize: int, bottleneck_filters: int, activation: str) -> Models:
    """Fresh supervised baseline (PtychoNN recipe): the same generator trained with MAE on the
    ground-truth amplitude and phase patches; no physics head."""
    spec = ModelSpec(kind="baseline", N=N, gridsize=gridsize,
                     bottleneck_filters=bottleneck_filters, activation=str(activation))
    diffraction, amplitude, phase = _generator(spec)
    stacked = keras.layers.Concatenate(axis=-1, name="amplitude_phase", dtype="float32")(
        [amplitude, phase])
    train = keras.Model(diffraction, stacked, name=f"baseline_N{spec.N}_g{spec.gridsize}")
    inference = keras.Model(diffraction, [amplitude, phase], name="baseline_inference")
    return Models(spec=spec, train=train, inference=inference)


def build_models(spec: ModelSpec, probe: np.ndarray | None = None) -> Models:
    """Fresh models from a :class:`ModelSpec` (used when loading a saved model)."""
    if spec.kind == "pinn":
        return _assemble_pinn(spec, probe, None)
    return build_baseline(N=spec.N, gridsize=spec.gridsize,
                          bottleneck_filters=spec.bottleneck_filters, activation=spec.activation)
