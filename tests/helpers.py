"""Tiny problems shared by tests (and run in subprocesses by the isolation test)."""

from __future__ import annotations

import numpy as np

from ptycho import runtime
from ptycho.arms.pinn import build
from ptycho.config import DataConfig, ObjectConfig, TrainConfig, validate
from ptycho.data import (
    DatasetPair,
    SimulationSpec,
    canvas_size,
    group_positions,
    make_datasets,
)
from ptycho.evaluation import Evaluation, evaluate
from ptycho.models import Models, compute_input_scale, model_inputs, pinn_targets
from ptycho.reconstruction.predict import predict
from ptycho.reconstruction.stitch import scan_weight
from ptycho.reconstruction.synchronise import synchronise_and_stitch
from ptycho.training import fit


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
    job = validate({"N": train.N, "gridsize": gridsize,
                    "model": {"bottleneck_filters": bottleneck_filters}})
    models = build(job, train.scan, canvas_size(groups.offsets, train.N))
    scale = compute_input_scale(train.counts)
    return models, model_inputs(train.scan, groups, scale), pinn_targets(train.scan, groups)


def train_steps(N: int, gridsize: int, seed: int = 0) -> dict[str, object]:
    """Reset, simulate, build and train two XLA steps; the losses that came out."""
    runtime.reset(seed)
    pair = tiny_pair(N, n_train=16, seed=seed)
    models, inputs, targets = tiny_pinn(pair, gridsize)
    result = fit(models.train, inputs, targets, loss="poisson_nll", jit_compile=True, seed=seed,
                 settings=TrainConfig(epochs=1, batch_size=8, validation_fraction=0.0))
    return {"loss": result.history["loss"], "xla": result.xla, "steps": result.steps_per_epoch}


def feed(models: Models, inputs: dict[str, np.ndarray]) -> object:
    """``inputs`` in the form the training model takes (an array or a list by input order)."""
    arrays = [inputs[tensor.name] for tensor in models.train.inputs]
    return arrays[0] if len(arrays) == 1 else arrays


def amplitude_error(models: Models, inputs: dict, pair: DatasetPair, groups) -> float:
    """Mean |s·â − a| in the probe's bright disc, after the best global scale s."""
    amplitude = predict(models.inference, inputs, batch_size=64)[0][..., 0]
    truth = np.abs(pair.train.patches[groups.indices[:, 0]])
    N = truth.shape[-1]
    yy, xx = np.mgrid[0:N, 0:N]
    disc = np.hypot(yy - N / 2, xx - N / 2) < 0.12 * N
    a, t = amplitude[:, disc], truth[:, disc]
    scale = (a * t).sum() / (a * a).sum()
    return float(np.abs(scale * a - t).mean())


def stitch_and_score(patches: np.ndarray, positions: np.ndarray, obj: np.ndarray, *,
                     probe: np.ndarray | None = None, keep_fraction: float = 0.3,
                     border: int = 4, phase_sync: str = "likelihood",
                     stitch_weighting: str = "probe", counts: np.ndarray | None = None,
                     patterns: np.ndarray | None = None) -> Evaluation:
    """A network's patches → its object (:func:`synchronise_and_stitch`) → scored against
    ``obj`` on the scan's region, as the pipeline does (the schema's default eval settings);
    the synchronisation's metrics and the alternative objects' SSIMs are in ``extra``."""
    stitched = synchronise_and_stitch(
        patches, positions, obj.shape, probe=probe, keep_fraction=keep_fraction,
        phase_sync=phase_sync, stitch_weighting=stitch_weighting, counts=counts,
        patterns=patterns)
    coverage = scan_weight(positions, patches.shape[-1], obj.shape, keep_fraction=keep_fraction)
    score = {"border": border, "phase_alignment": "plane", "subpixel_registration": False}
    result = evaluate(stitched.obj, obj, coverage, **score)
    result.extra.update(stitched.metrics)
    for name, image in stitched.alternatives.items():
        metrics = evaluate(image, obj, coverage, **score).metrics
        result.extra.update({f"{name}_amp_ssim": metrics["amp_ssim"],
                             f"{name}_phase_ssim": metrics["phase_ssim"]})
    return result


def exported_scan(path, *, N: int = 16, n_train: int = 24, dose: float = 1e5, seed: int = 0,
                  **data: object):
    """A tiny simulated scan written as a measured CXI file (:func:`ptycho.data.measured.
    raw_scan`), and the scan it came from."""
    from ptycho.data.cxi import write_cxi
    from ptycho.data.measured import Geometry, raw_scan

    pair = make_datasets(simulation_spec(N=N, dose=dose, n_train=n_train, seed=seed,
                                         obj=ObjectConfig(size=N + 24), **data))
    write_cxi(path, raw_scan(pair.train, Geometry()))
    return pair.train
