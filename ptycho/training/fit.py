"""Training: ``fit`` with XLA by default, plateau schedule, early stopping, a divergence guard,
and honest timings (compile separately from steady state).

Why our own timing and guard callbacks: Keras reports neither compile time nor per-step medians,
and its ``TerminateOnNaN`` stops silently; a study needs to know that a point diverged and why.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from ptycho.checks import check_positive_int, validation_count
from ptycho.config import Schedule, TrainConfig
from ptycho.training.losses import get_loss

__all__ = ["FitResult", "TrainingDiverged", "fit", "validation_split"]

log = logging.getLogger(__name__)

EpochHook = Callable[[int, dict[str, float]], None]


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss; ``report`` says where, ``history`` what came before."""

    def __init__(self, report: str, history: dict[str, list[float]]) -> None:
        super().__init__(report)
        self.report = report
        self.history = history


@dataclass
class FitResult:
    """What ran.

    Attributes:
        history: per-epoch ``loss``, ``val_loss`` (when validating) and ``learning_rate``.
        epochs_run: epochs completed.
        best_epoch: 1-based epoch whose weights were kept (early stopping restores them).
        stopped_early: early stopping ended training before ``epochs``.
        xla: whether the train step actually ran under XLA (Keras can silently turn it off).
        compile_time_s: first step minus a steady-state step (tracing + compilation), seconds.
        step_time_s: median steady-state step, seconds.
        epoch_time_s: steady-state epoch, ``step_time_s × steps_per_epoch``, seconds.
        train_time_s: wall time of the whole fit, seconds.
        steps_per_epoch: optimiser steps per epoch.
        patterns_per_step: diffraction patterns per step (batch × C).
    """

    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    xla: bool
    compile_time_s: float
    step_time_s: float
    epoch_time_s: float
    train_time_s: float
    steps_per_epoch: int
    patterns_per_step: int
    step_times_s: list[float] = field(default_factory=list, repr=False)

    @property
    def patterns_per_s(self) -> float:
        """Steady-state training throughput, diffraction patterns per second."""
        return self.patterns_per_step / self.step_time_s if self.step_time_s > 0 else math.nan


def _learning_rate(model: keras.Model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class _StepTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.step_times: list[float] = []
        self._start = 0.0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if logs and "loss" in logs:
            float(logs["loss"])  # wait for the step's result before stopping the clock
        self.step_times.append(time.perf_counter() - self._start)


class _Guard(keras.callbacks.Callback):
    """Stops on the first non-finite loss and remembers where it happened."""

    def __init__(self) -> None:
        super().__init__()
        self.report: str | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def _check(self, key: str, value: float, where: str) -> None:
        if not math.isfinite(value) and self.report is None:
            self.report = (f"training diverged: {key} became {value} at epoch {where} "
                           f"(learning rate {_learning_rate(self.model):g})")
            self.model.stop_training = True

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):  # (the message only then: this runs every step)
            self._check("loss", loss, f"{self.epoch + 1}, step {batch + 1}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            if key.endswith("loss"):
                self._check(key, float(value), str(epoch + 1))


class _Progress(keras.callbacks.Callback):
    """Per-epoch progress line (loss, learning rate, ETA) and the caller's epoch hook."""

    def __init__(self, epochs: int, hook: EpochHook | None) -> None:
        super().__init__()
        self.epochs = epochs
        self.hook = hook
        self.history: dict[str, list[float]] = {}
        self._fit_start = 0.0
        self._epoch_start = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._fit_start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = {k: float(v) for k, v in (logs or {}).items() if k in ("loss", "val_loss")}
        values["learning_rate"] = _learning_rate(self.model)
        if not all(math.isfinite(v) for v in values.values()):
            return  # the guard reports it; nothing non-finite reaches the history or the hook
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)
        now = time.perf_counter()
        done = epoch + 1
        eta = (now - self._fit_start) / done * (self.epochs - done)
        log.info("epoch %d/%d  %s  %.1fs  ETA %s", done, self.epochs,
                 "  ".join(f"{k}={v:.5g}" for k, v in values.items()), now - self._epoch_start,
                 _duration(eta))
        if self.hook is not None:
            self.hook(done, values)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _batches(inputs: dict[str, np.ndarray], targets: np.ndarray, batch_size: int, *,
             seed: int | None, drop_remainder: bool) -> tf.data.Dataset:
    """Batches of ``(features, targets)``, shuffled (seeded) when ``seed`` is given.

    ``drop_remainder=True`` gives static batch shapes (XLA compiles the train step once);
    ``False`` keeps the last, smaller batch (validation must see every held-out group).
    """
    # A single-input model takes the bare array (a one-key dict makes Keras warn).
    features = next(iter(inputs.values())) if len(inputs) == 1 else inputs
    dataset = tf.data.Dataset.from_tensor_slices((features, targets))
    if seed is not None:
        dataset = dataset.shuffle(len(targets), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


Loss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def _scaled(loss_fn: Loss, scale: float) -> Loss:
    """``scale · loss_fn`` (the function itself when ``scale`` is 1)."""
    if scale == 1.0:
        return loss_fn

    def scaled(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return loss_fn(y_true, y_pred) * scale

    scaled.__name__ = getattr(loss_fn, "__name__", "loss")
    return scaled


def validation_split(n_groups: int, validation_fraction: float, *,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded split ``fit`` uses: ``(train indices, validation indices)``, each sorted int64.

    Args:
        n_groups: number of groups ``G`` (≥ 1).
        validation_fraction: share held out, in ``[0, 1)``; see
            :func:`ptycho.checks.validation_count`.
        seed: permutation seed (``fit``'s ``seed``).

    Returns:
        ``(train (G − V,), validation (V,))`` int64 indices into the groups.
    """
    n_groups = check_positive_int(n_groups, "n_groups")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in [0, 1), got {validation_fraction!r}")
    n_val = validation_count(n_groups, validation_fraction)
    order = np.random.default_rng(seed).permutation(n_groups)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def fit(model: keras.Model, inputs: dict[str, np.ndarray], targets: np.ndarray, *, loss: str,
        settings: TrainConfig, jit_compile: bool, seed: int, loss_scale: float = 1.0,
        validation: np.ndarray | None = None, on_epoch: EpochHook | None = None) -> FitResult:
    """Train ``model`` (compiled here with a fresh Adam) and return what ran.

    Args:
        model: a training model from :mod:`ptycho.models` (fresh or to be trained further).
        inputs, targets: name → ``(G, ...)`` arrays (:func:`ptycho.models.model_inputs`) and
            ``(G, ...)`` float32 targets (counts for the PINN, amplitude/phase for the baseline).
        loss: ``poisson_nll``, ``mae`` or ``supervised_mae``.
        settings: epochs, batch size (training batches are static: the remainder of the
            training groups is dropped each epoch, a different one each shuffle), learning
            rate, the plateau schedule and early stopping (best weights restored), whose
            ``min_delta`` is in the units of ``loss_scale · loss``; ``validation_fraction``:
            the share of groups held out (seeded, :func:`validation_split`) unless
            ``validation`` is given; 0: the schedule watches ``loss``.
        jit_compile: compile the whole train step with XLA.
        seed: shuffling and validation split.
        loss_scale: the loss trained on (and logged) is ``loss_scale · loss``;
            :func:`ptycho.training.dose_scale` makes it dose-independent.
        validation: ``(V,)`` int indices of the groups to hold out, chosen by the caller (the
            network arm holds out a region, :func:`ptycho.data.holdout_region`, so that no
            pattern is in a training and a validation group). Empty: no validation.
        on_epoch: called after each finite epoch with ``(epoch, {loss, val_loss, learning_rate})``.

    Raises:
        TrainingDiverged: a loss became NaN or infinite; nothing non-finite is returned.
        ValueError: bad arguments, named with their values.
    """
    if not (math.isfinite(loss_scale) and loss_scale > 0):
        raise ValueError(f"loss_scale must be a positive finite number, got {loss_scale!r}")
    train_idx, val_idx = _split(len(targets), settings, validation, seed)
    train_ds = _batches({k: v[train_idx] for k, v in inputs.items()}, targets[train_idx],
                        settings.batch_size, seed=seed, drop_remainder=True)
    val_ds = None if not val_idx.size else _batches(  # every held-out group counts (the last
        {k: v[val_idx] for k, v in inputs.items()}, targets[val_idx],  # batch may be smaller)
        min(settings.batch_size, val_idx.size), seed=None, drop_remainder=False)
    steps_per_epoch = train_idx.size // settings.batch_size
    model.compile(optimizer=keras.optimizers.Adam(_learning_rates(settings, steps_per_epoch)),
                  loss=_scaled(get_loss(loss), loss_scale), jit_compile=bool(jit_compile))
    # Create the optimizer's slots eagerly: created on the first traced step they become
    # cond-initialised variables whose graphs TensorFlow keeps for the life of the process
    # (measured: ~45 MB per job in a sequential sweep).
    model.optimizer.build(model.trainable_variables)
    timer, guard, progress = _StepTimer(), _Guard(), _Progress(settings.epochs, on_epoch)
    monitor = "val_loss" if val_ds is not None else "loss"
    log.info("training %s: %d groups (%d validation), %d steps/epoch, up to %d epochs, %s "
             "schedule, XLA %s", model.name, len(targets), val_idx.size, steps_per_epoch,
             settings.epochs, settings.schedule, "on" if jit_compile else "off")
    start = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=settings.epochs, verbose=0,
              callbacks=[timer, guard, *_schedule(settings, monitor), progress],
              shuffle=False)  # the dataset is shuffled, seeded, above
    train_time = time.perf_counter() - start
    if guard.report is not None:
        log.error("%s", guard.report)
        raise TrainingDiverged(guard.report, progress.history)
    steps, history = timer.step_times, progress.history
    steady = float(np.median(steps[1:])) if len(steps) > 1 else float(steps[0])
    monitored, epochs_run = history.get(monitor, []), len(history.get("loss", []))
    return FitResult(
        history=history, epochs_run=epochs_run,
        best_epoch=int(np.argmin(monitored)) + 1 if monitored else 0,
        stopped_early=epochs_run < settings.epochs, xla=bool(model.jit_compile),
        compile_time_s=max(0.0, float(steps[0]) - steady), step_time_s=steady,
        epoch_time_s=steady * steps_per_epoch, train_time_s=train_time,
        steps_per_epoch=steps_per_epoch,
        patterns_per_step=settings.batch_size * int(inputs["diffraction"].shape[-1]),
        step_times_s=list(steps),
    )


def _split(n_groups: int, settings: TrainConfig, validation: np.ndarray | None,
           seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` group indices: the caller's validation groups, else the seeded
    split of ``settings.validation_fraction``; refused when too few groups are left to train."""
    if validation is None:
        train_idx, val_idx = validation_split(n_groups, settings.validation_fraction, seed=seed)
    else:
        val_idx = np.unique(np.asarray(validation, dtype=np.int64))
        if val_idx.size and (val_idx[0] < 0 or val_idx[-1] >= n_groups):
            raise ValueError(f"validation indices must lie in [0, {n_groups}), got "
                             f"{val_idx[0]}..{val_idx[-1]}")
        train_idx = np.setdiff1d(np.arange(n_groups), val_idx)
    if train_idx.size < settings.batch_size:
        raise ValueError(
            f"batch_size={settings.batch_size} exceeds the {train_idx.size} training groups "
            f"({n_groups} groups, {val_idx.size} held out for validation)")
    return train_idx, val_idx


def _learning_rates(settings: TrainConfig, steps_per_epoch: int
                    ) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """Adam's learning rate: constant for ``plateau`` (the callback lowers it), else Keras's
    cosine decay with a linear warm-up from a tenth of ``learning_rate`` over
    ``warmup_fraction`` of the steps, reaching ``min_learning_rate`` at the last step."""
    if settings.schedule == Schedule.plateau:
        return settings.learning_rate
    total = max(settings.epochs * steps_per_epoch, 1)
    warmup = round(settings.warmup_fraction * total)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.1 * settings.learning_rate if warmup else settings.learning_rate,
        decay_steps=max(total - warmup, 1),
        alpha=min(settings.min_learning_rate / settings.learning_rate, 1.0),
        warmup_target=settings.learning_rate if warmup else None, warmup_steps=warmup)


def _schedule(settings: TrainConfig, monitor: str) -> list[keras.callbacks.Callback]:
    """Early stopping (best weights restored) on ``monitor``, after reduce-on-plateau for the
    ``plateau`` schedule."""
    stopping = keras.callbacks.EarlyStopping(
        monitor=monitor, patience=settings.early_stopping_patience,
        min_delta=settings.min_delta, restore_best_weights=True)
    if settings.schedule != Schedule.plateau:
        return [stopping]
    return [
        keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=settings.plateau_factor, patience=settings.plateau_patience,
            min_delta=settings.min_delta, min_lr=settings.min_learning_rate, verbose=0),
        stopping,
    ]
