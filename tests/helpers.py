"""Tiny problems shared by tests (and run in subprocesses by the isolation test)."""

from __future__ import annotations

import numpy as np

from ptycho import runtime
from ptycho.data import (
    DatasetPair,
    ObjectSpec,
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
from ptycho.training import fit


def tiny_pair(N: int, *, n_train: int = 24, n_test: int = 8, dose: float = 1e5,
              seed: int = 0, object_size: int | None = None) -> DatasetPair:
    size = object_size or N + 24
    return make_datasets(SimulationSpec(N=N, dose=dose, n_train=n_train, n_test=n_test,
                                        seed=seed, obj=ObjectSpec(size=size)))


def tiny_pinn(pair: DatasetPair, gridsize: int) -> tuple[Models, dict, np.ndarray]:
    """A fresh PINN for ``pair.train`` with its inputs and targets."""
    train = pair.train
    groups = group_positions(train.positions, gridsize)
    models = build_pinn(
        N=train.N,
        gridsize=gridsize,
        probe=train.probe,
        canvas_size=canvas_size(groups.offsets, train.N),
        log_scale=initial_log_scale(train.measured_dose, train.probe),
    )
    scale = compute_input_scale(train.counts)
    return models, model_inputs(train, groups, scale), pinn_targets(train, groups)


def train_steps(N: int, gridsize: int, seed: int = 0) -> dict[str, object]:
    """Reset, simulate, build and train two XLA steps; the losses that came out."""
    runtime.reset(seed)
    pair = tiny_pair(N, n_train=16, seed=seed)
    models, inputs, targets = tiny_pinn(pair, gridsize)
    result = fit(models.train, inputs, targets, loss="poisson_nll", epochs=1, batch_size=8,
                 validation_fraction=0.0, seed=seed)
    return {"loss": result.history["loss"], "xla": result.xla, "steps": result.steps_per_epoch}


def feed(models: Models, inputs: dict[str, np.ndarray]) -> object:
    """``inputs`` in the form the training model takes (an array or a list by input order)."""
    arrays = [inputs[tensor.name] for tensor in models.train.inputs]
    return arrays[0] if len(arrays) == 1 else arrays
