"""What the network arms share: group → build → fit → predict → synchronise → stitch
(docs/physics.md §5–§8.1). :mod:`.pinn` and :mod:`.baseline` differ only in the model they build,
what they train it on and how they predict counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ptycho import runtime
from ptycho.arms.base import ArmInput, ProgressHook, Reconstruction
from ptycho.checks import validation_count
from ptycho.config import JobConfig
from ptycho.data import (
    Groups,
    Scan,
    canvas_size,
    check_canvas,
    check_matched_groups,
    concatenate_groups,
    group_positions,
    holdout_region,
)
from ptycho.models import Models, compute_input_scale, model_inputs, save_model
from ptycho.reconstruction.predict import Patches, predict_patches
from ptycho.reconstruction.synchronise import synchronise_and_stitch
from ptycho.training import dose_scale, fit

__all__ = ["Network", "TrainingGroups", "reconstruct_with_network", "training_groups"]


@dataclass(frozen=True)
class TrainingGroups:
    """The groups ``fit`` sees: training groups first, then validation groups.

    Attributes:
        groups: all of them, indices into the training scan.
        validation: ``(V,)`` int64 indices (into ``groups``) of the validation groups.
        validation_patterns: ``(P,)`` int64 indices (into the scan) of the held-out region.
    """

    groups: Groups
    validation: np.ndarray
    validation_patterns: np.ndarray


def training_groups(positions: np.ndarray, gridsize: int, validation_fraction: float, *,
                    seed: int) -> TrainingGroups:
    """Hold out a region of the scan for validation and group each part on its own.

    ``round(validation_fraction · M)`` patterns around a seeded scan position are held out
    (:func:`ptycho.data.holdout_region`); training groups are formed among the others and
    validation groups among the held-out ones, so no pattern is in both (at every gridsize).

    Args:
        positions: ``(M, 2)`` float64 ``(x, y)`` pixels of the training scan.
        gridsize: g ≥ 1.
        validation_fraction: share of the patterns held out, in ``[0, 0.5]``; 0: none.
        seed: the region's and the groups' seed.
    """
    count = validation_count(len(positions), validation_fraction)
    train_patterns, val_patterns = holdout_region(positions, count, seed=seed)
    train = group_positions(positions, gridsize, seed=seed, among=train_patterns)
    if not count:
        return TrainingGroups(train, np.zeros(0, np.int64), val_patterns)
    validation = group_positions(positions, gridsize, seed=seed, among=val_patterns)
    return TrainingGroups(
        groups=concatenate_groups(train, validation),
        validation=np.arange(len(train), len(train) + len(validation), dtype=np.int64),
        validation_patterns=val_patterns,
    )


@dataclass(frozen=True)
class Network:
    """How one network arm differs from the other.

    Attributes:
        build: ``(job, training scan, canvas side) → fresh Models``.
        targets: ``(arm input, training groups) → (G, …)`` float32 training targets.
        expected: ``(models, scored scan, its groups, its patches, input scale) → (expected
            counts (K, N, N), their patterns (K,))``.
    """

    build: Callable[[JobConfig, Scan, int], Models]
    targets: Callable[[ArmInput, Groups], np.ndarray]
    expected: Callable[[Models, Scan, Groups, Patches, float, int],
                       tuple[np.ndarray, np.ndarray]]


def _canvas(job: JobConfig, train_groups: Groups, test_groups: Groups) -> int:
    """Before any training: the scored groups are shaped like the training groups and every
    group fits the overlap canvas. Returns the canvas side (pixels), sized from both."""
    check_matched_groups(train_groups, test_groups, what="test groups")
    offsets = [train_groups.offsets, test_groups.offsets]
    canvas = canvas_size(offsets, job.N)
    check_canvas(offsets, job.N, canvas)
    return canvas


def reconstruct_with_network(network: Network, data: ArmInput, job: JobConfig,
                             on_progress: ProgressHook | None) -> Reconstruction:
    """Train a fresh network on ``data.training`` and reconstruct ``data.scored`` with it."""
    train, scored = data.training, data.scored
    split = training_groups(train.positions, job.gridsize, job.train.validation_fraction,
                            seed=job.seed)
    test_groups = group_positions(scored.positions, job.gridsize, seed=job.seed)
    canvas = _canvas(job, split.groups, test_groups)
    input_scale = compute_input_scale(train.counts)
    models = network.build(job, train, canvas)

    def on_epoch(epoch: int, values: dict[str, float]) -> None:
        if on_progress is not None:
            on_progress(epoch, {("train_loss" if k == "loss" else k): v
                                for k, v in values.items()})

    result = fit(models.train, model_inputs(train, split.groups, input_scale),
                 network.targets(data, split.groups), loss=job.training_loss, settings=job.train,
                 loss_scale=dose_scale(job.training_loss, train.counts),
                 validation=split.validation, seed=job.seed, on_epoch=on_epoch,
                 jit_compile=runtime.resolve_jit_compile(str(job.train.jit_compile)))
    start = time.perf_counter()
    e = job.eval
    probe = _probe(models, scored.probe)
    patches = predict_patches(models, scored, test_groups, input_scale, batch_size=e.batch_size)
    predicted = time.perf_counter()
    stitched = synchronise_and_stitch(
        patches.patches, patches.positions, scored.object_shape, probe=probe,
        keep_fraction=e.keep_fraction, phase_sync=str(e.phase_sync),
        stitch_weighting=str(e.stitch_weighting),
        # the likelihood reads the measured pixels, its background removed (approximately: a
        # scale profiled out has no closed form under a background)
        counts=scored.detector.signal(scored.counts[patches.indices]), patterns=patches.indices,
        mask=scored.detector.mask)
    synchronised = time.perf_counter()
    expected, patterns = network.expected(models, scored, test_groups, patches, input_scale,
                                          e.batch_size)
    return Reconstruction(
        obj=stitched.obj, expected=expected, expected_patterns=patterns,
        history=dict(result.history), alternatives=stitched.alternatives, probe=probe,
        patches=patches,
        tags={"xla": str(result.xla).lower()},
        metrics={
            **stitched.metrics,
            "time_compile_s": result.compile_time_s,
            "time_train_s": result.train_time_s,
            "time_reconstruct_s": time.perf_counter() - start,
            # its parts: the network's patches, their phases and stitch, the expected counts
            "time_predict_s": predicted - start,
            "time_stitch_s": synchronised - predicted,
            "time_expected_s": time.perf_counter() - synchronised,
            "train_patterns_per_s": result.patterns_per_s,
            "params_count": float(models.params_count),
            "validation_patterns": float(len(split.validation_patterns)),
            "validation_groups": float(len(split.validation)),
            "epochs_run": float(result.epochs_run),
            "best_epoch": float(result.best_epoch),
            # the monitored loss of the weights kept (dose-scaled units): a search's objective
            "val_loss_best": float(min(result.history.get("val_loss")
                                       or result.history["loss"])),
        },
        save=partial(_save, models, input_scale),
    )


def _probe(models: Models, given: np.ndarray) -> np.ndarray:
    """The network's own probe estimate (the PINN's probe weights, refined by training with
    ``model.trainable_probe``), else the ``given`` one: what synchronisation and stitching use."""
    try:
        return models.train.get_layer("probe_illumination").probe().numpy()
    except ValueError:  # no physics head: the baseline
        return given


def _save(models: Models, input_scale: float, folder: Path) -> None:
    save_model(folder, models, input_scale)
