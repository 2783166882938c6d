"""Tiny problems shared by tests (and run in subprocesses by the isolation test)."""

from __future__ import annotations

import numpy as np

from ptycho import runtime
from ptycho.config import DataConfig, ObjectConfig
from ptycho.data import (
    DatasetPair,
    SimulationSpec,
    canvas_size,
    group_positions,
    make_datasets,
)
from ptycho.models import (
    Models,
    build_pinn,
    compute_input_scale,
    initial_log_scale,
    model_inputs,
    pinn_targets,
)
from ptycho.training import fit, predict


def simulation_spec(*, N: int, dose: float, seed: int = 0, obj: ObjectConfig | None = None,
                    **data: object) -> SimulationSpec:
    """A :class:`SimulationSpec` from the data section's fields (``obj`` for ``object``); the
    rest take the schema's defaults."""
    if obj is not None:
        data["object"] = obj
    return SimulationSpec(N=N, dose=dose, seed=seed, data=DataConfig(**data))  # type: ignore


def tiny_pair(N: int, *, n_train: int = 24, dose: float = 1e5, seed: int = 0,
              object_size: int | None = None, design: str = "reconstruct") -> DatasetPair:
    size = object_size or N + 24
    return make_datasets(simulation_spec(N=N, dose=dose, n_train=n_train, design=design,
                                         seed=seed, obj=ObjectConfig(size=size)))


def tiny_pinn(pair: DatasetPair, gridsize: int, *,
              bottleneck_filters: int = 64) -> tuple[Models, dict, np.ndarray]:
    """A fresh PINN for ``pair.train`` with its inputs and targets. Narrower than the default
    network (64 filters at the bottleneck, not 256): tests need its behaviour, not its width."""
    train = pair.train
    groups = group_positions(train.positions, gridsize, seed=0)
    models = build_pinn(
        N=train.N,
        gridsize=gridsize,
        probe=train.probe,
        canvas_size=canvas_size(groups.offsets, train.N),
        log_scale=initial_log_scale(train.measured_dose, train.probe),
        bottleneck_filters=bottleneck_filters,
    )
    scale = compute_input_scale(train.counts)
    return models, model_inputs(train, groups, scale), pinn_targets(train, groups)


def train_steps(N: int, gridsize: int, seed: int = 0) -> dict[str, object]:
    """Reset, simulate, build and train two XLA steps; the losses that came out."""
    runtime.reset(seed)
    pair = tiny_pair(N, n_train=16, seed=seed)
    models, inputs, targets = tiny_pinn(pair, gridsize)
    result = fit(models.train, inputs, targets, loss="poisson_nll", epochs=1, batch_size=8,
                 validation_fraction=0.0, jit_compile=True, seed=seed)
    return {"loss": result.history["loss"], "xla": result.xla, "steps": result.steps_per_epoch}


def feed(models: Models, inputs: dict[str, np.ndarray]) -> object:
    """``inputs`` in the form the training model takes (an array or a list by input order)."""
    arrays = [inputs[tensor.name] for tensor in models.train.inputs]
    return arrays[0] if len(arrays) == 1 else arrays


def amplitude_error(models: Models, inputs: dict, pair: DatasetPair, groups) -> float:
    """Mean |s·â − a| in the probe's bright disc, after the best global scale s."""
    amplitude = predict(models.inference, inputs)[0][..., 0]
    truth = np.abs(pair.train.patches[groups.indices[:, 0]])
    N = truth.shape[-1]
    yy, xx = np.mgrid[0:N, 0:N]
    disc = np.hypot(yy - N / 2, xx - N / 2) < 0.12 * N
    a, t = amplitude[:, disc], truth[:, disc]
    scale = (a * t).sum() / (a * a).sum()
    return float(np.abs(scale * a - t).mean())
