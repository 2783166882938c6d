"""Training: ``fit`` with XLA by default, plateau schedule, early stopping, a divergence guard,
and honest timings (compile separately from steady state); ``predict`` with static batch shapes.

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
from ptycho.config import EvalConfig, TrainConfig
from ptycho.training.losses import get_loss

__all__ = ["FitResult", "TrainingDiverged", "fit", "predict", "validation_split"]

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

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss) and self.report is None:
            self.report = (
                f"training diverged: loss became {loss} at epoch {self.epoch + 1}, step "
                f"{batch + 1} (learning rate {_learning_rate(self.model):g})"
            )
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            if key.endswith("loss") and not math.isfinite(float(value)) and self.report is None:
                self.report = (
                    f"training diverged: {key} became {float(value)} at epoch {epoch + 1} "
                    f"(learning rate {_learning_rate(self.model):g})"
                )
                self.model.stop_training = True


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
        log.info(
            "epoch %d/%d  %s  %.1fs  ETA %s",
            done,
            self.epochs,
            "  ".join(f"{k}={v:.5g}" for k, v in values.items()),
            now - self._epoch_start,
            _duration(eta),
        )
        if self.hook is not None:
            self.hook(done, values)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _batches(
    inputs: dict[str, np.ndarray],
    targets: np.ndarray,
    batch_size: int,
    *,
    seed: int | None,
    drop_remainder: bool,
) -> tf.data.Dataset:
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


def validation_split(
    n_groups: int, validation_fraction: float, *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
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


def fit(
    model: keras.Model,
    inputs: dict[str, np.ndarray],
    targets: np.ndarray,
    *,
    loss: str,
    jit_compile: bool,
    seed: int,
    epochs: int = TrainConfig.epochs,
    batch_size: int = TrainConfig.batch_size,
    learning_rate: float = TrainConfig.learning_rate,
    validation_fraction: float = TrainConfig.validation_fraction,
    plateau_factor: float = TrainConfig.plateau_factor,
    plateau_patience: int = TrainConfig.plateau_patience,
    min_learning_rate: float = TrainConfig.min_learning_rate,
    early_stopping_patience: int = TrainConfig.early_stopping_patience,
    min_delta: float = TrainConfig.min_delta,
    loss_scale: float = 1.0,
    validation: np.ndarray | None = None,
    on_epoch: EpochHook | None = None,
) -> FitResult:
    """Train ``model`` (compiled here with a fresh Adam) and return what ran.

    Args:
        model: a training model from :mod:`ptycho.models` (fresh or to be trained further).
        inputs: name → ``(G, ...)`` arrays (:func:`ptycho.models.model_inputs`).
        targets: ``(G, ...)`` float32 targets (counts for the PINN, amplitude/phase for the
            baseline).
        loss: ``poisson_nll``, ``mae`` or ``supervised_mae``.
        epochs: maximum epochs (early stopping may end sooner).
        batch_size: groups per step; training batches are static (the remainder of the
            training groups is dropped each epoch, a different one each shuffle); validation
            uses every held-out group.
        learning_rate: Adam's initial rate.
        validation_fraction: share of groups held out (seeded, :func:`validation_split`) for
            ``val_loss``, the mean loss over every held-out group; 0 disables validation and
            the schedule then watches ``loss``. Ignored when ``validation`` is given.
        validation: ``(V,)`` int indices of the groups to hold out, chosen by the caller (the
            job holds out a region, :func:`ptycho.data.holdout_region`, so that no pattern is
            in a training and a validation group); every other group trains. Empty: no
            validation.
        plateau_factor, plateau_patience, min_learning_rate: reduce-on-plateau schedule.
        early_stopping_patience: epochs without improvement before stopping; the best epoch's
            weights are restored.
        min_delta: the least decrease of the monitored loss that counts as an improvement, for
            the plateau schedule and early stopping (in the units of ``loss_scale · loss``).
        loss_scale: the loss trained on (and logged) is ``loss_scale · loss``;
            :func:`ptycho.training.dose_scale` makes it dose-independent.
        jit_compile: compile the whole train step with XLA.
        seed: shuffling and validation split.
        on_epoch: called after each finite epoch with ``(epoch, {loss, val_loss, learning_rate})``.

    Raises:
        TrainingDiverged: a loss became NaN or infinite; nothing non-finite is returned.
        ValueError: bad arguments, named with their values.
    """
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate!r}")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in [0, 1), got {validation_fraction!r}")
    if not (math.isfinite(loss_scale) and loss_scale > 0):
        raise ValueError(f"loss_scale must be a positive finite number, got {loss_scale!r}")
    if not (math.isfinite(min_delta) and min_delta >= 0):
        raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
    loss_fn = _scaled(get_loss(loss), loss_scale)
    n_groups = len(targets)
    if validation is None:
        train_idx, val_idx = validation_split(n_groups, validation_fraction, seed=seed)
    else:
        val_idx = np.unique(np.asarray(validation, dtype=np.int64))
        if val_idx.size and (val_idx[0] < 0 or val_idx[-1] >= n_groups):
            raise ValueError(f"validation indices must lie in [0, {n_groups}), got "
                             f"{val_idx[0]}..{val_idx[-1]}")
        train_idx = np.setdiff1d(np.arange(n_groups), val_idx)
    n_val = int(val_idx.size)
    n_train = n_groups - n_val
    if n_train < batch_size:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {n_train} training groups "
            f"({n_groups} groups, {n_val} held out for validation)"
        )

    train_ds = _batches(
        {k: v[train_idx] for k, v in inputs.items()},
        targets[train_idx],
        batch_size,
        seed=seed,
        drop_remainder=True,
    )
    val_ds = None
    if n_val:
        # Every held-out group counts: the last batch may be smaller (one more compiled shape
        # of the test step, traced once). Keras weights each batch's loss by its size, so
        # val_loss is the mean over all held-out groups.
        val_ds = _batches(
            {k: v[val_idx] for k, v in inputs.items()},
            targets[val_idx],
            min(batch_size, n_val),
            seed=None,
            drop_remainder=False,
        )
    monitor = "val_loss" if val_ds is not None else "loss"

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=loss_fn,
        jit_compile=bool(jit_compile),
    )
    # Create the optimizer's slots eagerly: created on the first traced step they become
    # cond-initialised variables whose graphs TensorFlow keeps for the life of the process
    # (measured: ~45 MB per job in a sequential sweep).
    model.optimizer.build(model.trainable_variables)
    timer, guard, progress = _StepTimer(), _Guard(), _Progress(epochs, on_epoch)
    stopper = keras.callbacks.EarlyStopping(
        monitor=monitor, patience=early_stopping_patience, min_delta=min_delta,
        restore_best_weights=True,
    )
    callbacks = [
        timer,
        guard,
        keras.callbacks.ReduceLROnPlateau(
            monitor=monitor,
            factor=plateau_factor,
            patience=plateau_patience,
            min_delta=min_delta,
            min_lr=min_learning_rate,
            verbose=0,
        ),
        stopper,
        progress,
    ]
    steps_per_epoch = n_train // batch_size
    channels = int(inputs["diffraction"].shape[-1])
    log.info(
        "training %s: %d groups (%d validation), %d steps/epoch, up to %d epochs, XLA %s",
        model.name, n_groups, n_val, steps_per_epoch, epochs, "on" if jit_compile else "off",
    )
    start = time.perf_counter()
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        verbose=0,
        callbacks=callbacks,
        shuffle=False,  # the dataset is shuffled, seeded, above
    )
    train_time = time.perf_counter() - start
    if guard.report is not None:
        log.error("%s", guard.report)
        raise TrainingDiverged(guard.report, progress.history)

    steps = timer.step_times
    steady = float(np.median(steps[1:])) if len(steps) > 1 else float(steps[0])
    history = progress.history
    monitored = history.get(monitor, [])
    best_epoch = int(np.argmin(monitored)) + 1 if monitored else 0
    epochs_run = len(history.get("loss", []))
    return FitResult(
        history=history,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        stopped_early=epochs_run < epochs,
        xla=bool(model.jit_compile),
        compile_time_s=max(0.0, float(steps[0]) - steady),
        step_time_s=steady,
        epoch_time_s=steady * steps_per_epoch,
        train_time_s=train_time,
        steps_per_epoch=steps_per_epoch,
        patterns_per_step=batch_size * channels,
        step_times_s=list(steps),
    )


def predict(
    model: keras.Model,
    inputs: dict[str, np.ndarray],
    *,
    batch_size: int = EvalConfig.batch_size,
    jit_compile: bool | None = None,
) -> list[np.ndarray]:
    """Run ``model`` over every row of ``inputs`` with one static batch shape.

    The last batch is padded (and the padding dropped), so a compiled predict step is traced once.
    ``jit_compile`` (re)compiles the model for inference; ``None`` keeps its current setting.

    Returns:
        The model's outputs as a list of ``(G, ...)`` arrays.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    if jit_compile is not None:
        model.compile(jit_compile=bool(jit_compile))
    names = [tensor.name for tensor in model.inputs]
    arrays = {name: inputs[name] for name in names}
    total = len(next(iter(arrays.values())))
    batch_size = min(batch_size, total)
    padded_total = -(-total // batch_size) * batch_size
    padded = {
        name: np.concatenate([a, np.repeat(a[-1:], padded_total - total, axis=0)])
        if padded_total > total
        else a
        for name, a in arrays.items()
    }
    # A single-input model takes the bare array (a one-key dict makes Keras warn).
    elements = padded[names[0]] if len(names) == 1 else padded
    dataset = tf.data.Dataset.from_tensor_slices(elements).batch(batch_size, drop_remainder=True)
    outputs = model.predict(dataset, verbose=0)
    if not isinstance(outputs, list | tuple):
        outputs = [outputs]
    return [np.asarray(output)[:total] for output in outputs]
