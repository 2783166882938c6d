"""Training: losses, learning on a real problem, the divergence guard, what fit reports, and
models of different N and gridsize trained in one process matching fresh processes."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ptycho import runtime
from ptycho.config import TrainConfig
from ptycho.physics import poisson_nll, poisson_nll_per_photon
from ptycho.reconstruction.predict import predict
from ptycho.training import TrainingDiverged, amplitude_mae, dose_scale, fit, get_loss
from ptycho.training.fit import validation_split
from tests.helpers import tiny_pair, tiny_pinn, train_steps

ROOT = Path(__file__).resolve().parents[2]


def test_poisson_nll_is_minimised_at_the_counts() -> None:
    counts = tf.constant(np.random.default_rng(0).poisson(20.0, (2, 8, 8, 1)), tf.float32)
    at_truth = float(poisson_nll(counts, counts + 1e-3))
    assert at_truth < float(poisson_nll(counts, counts * 1.2))
    assert at_truth < float(poisson_nll(counts, counts * 0.8))
    assert float(amplitude_mae(counts, counts)) == pytest.approx(0.0, abs=1e-4)
    assert float(amplitude_mae(tf.zeros((1, 2)), tf.fill((1, 2), 4.0))) == pytest.approx(2.0)


def test_full_nll_per_photon_matches_scipy() -> None:
    from scipy.stats import poisson

    rng = np.random.default_rng(1)
    expected = rng.uniform(0.5, 30, (3, 8, 8))
    counts = rng.poisson(expected).astype(np.float64)
    reference = -poisson.logpmf(counts, expected).sum() / counts.sum()
    assert float(poisson_nll_per_photon(counts, expected)) == pytest.approx(reference, rel=1e-4)


@pytest.mark.parametrize("epsilon", [0.01, 0.05])
def test_dose_scaled_nll_rises_by_the_same_amount_at_every_dose(epsilon: float) -> None:
    """A relative amplitude error ε raises the scaled NLL by E = (1+ε)² − 1 − 2·log(1+ε) (nats
    per photon) at any dose, so train.min_delta means the same at 1e2 and 1e8 photons per
    pattern; the unscaled loss's rise grows with the dose."""
    rng = np.random.default_rng(2)
    shape = 1e-3 + np.abs(np.fft.fftshift(np.fft.fft2(rng.standard_normal((64, 16, 16)))) ** 2)
    rises = {}
    for dose in (1e2, 1e8):
        expected = shape / shape.sum(axis=(1, 2), keepdims=True) * dose
        # The loss is linear in the counts: its mean over Poisson draws is its value at λ (one
        # draw at 1e2 photons scatters the rise by more than its size).
        counts = expected.astype(np.float32)[..., None]
        truth = tf.constant(expected[..., None], tf.float32)
        worse = truth * (1 + epsilon) ** 2
        raw = float(poisson_nll(counts, worse)) - float(poisson_nll(counts, truth))
        rises[dose] = (raw, raw * dose_scale("poisson_nll", counts))
    exact = (1 + epsilon) ** 2 - 1 - 2 * np.log(1 + epsilon)
    for dose, (_raw, scaled) in rises.items():
        assert scaled == pytest.approx(exact, rel=2e-2), dose
    assert rises[1e8][0] / rises[1e2][0] > 1e5
    assert dose_scale("supervised_mae", np.ones(3)) == 1.0
    assert dose_scale("mae", np.full(4, 9.0)) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"positive finite mean, got 0\.0"):
        dose_scale("poisson_nll", np.zeros(4))


def test_unknown_loss_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"loss must be one of .* got 'foo'"):
        get_loss("foo")


def test_fit_reports_what_ran() -> None:
    runtime.reset(0)
    pair = tiny_pair(16, n_train=40)
    models, inputs, targets = tiny_pinn(pair, 2)
    seen = []
    result = fit(models.train, inputs, targets, loss="mae",
                 settings=TrainConfig(epochs=2, batch_size=8, validation_fraction=0.1),
                 on_epoch=lambda e, logs: seen.append((e, logs)), jit_compile=False, seed=0)
    assert result.steps_per_epoch == 36 // 8
    assert result.patterns_per_step == 8 * 4
    assert len(result.step_times_s) == 2 * result.steps_per_epoch
    assert result.compile_time_s > result.step_time_s > 0
    assert result.epoch_time_s == pytest.approx(result.step_time_s * result.steps_per_epoch)
    assert result.patterns_per_s == pytest.approx(32 / result.step_time_s)
    assert [e for e, _ in seen] == [1, 2]
    assert set(seen[0][1]) == {"loss", "val_loss", "learning_rate"}
    assert 1 <= result.best_epoch <= 2
    assert result.xla is False


def test_the_cosine_schedule_warms_up_then_decays_to_its_floor_by_the_last_epoch() -> None:
    """``schedule=cosine``: the rate at each epoch's end rises over the warm-up, then falls
    every epoch to ``min_learning_rate`` at the last; no plateau callback changes it."""
    runtime.reset(0)
    pair = tiny_pair(16, n_train=40)
    models, inputs, targets = tiny_pinn(pair, 1)
    seen = []
    settings = TrainConfig(epochs=5, batch_size=8, validation_fraction=0.0, learning_rate=1e-3,
                           min_learning_rate=1e-4, schedule="cosine", warmup_fraction=0.2,
                           early_stopping_patience=10)
    fit(models.train, inputs, targets, loss="mae", settings=settings, jit_compile=False,
        seed=0, on_epoch=lambda e, logs: seen.append(logs["learning_rate"]))
    assert len(seen) == 5
    assert seen[0] == pytest.approx(1e-3, rel=0.05)  # 5 of 25 steps: warm-up done at epoch 1
    assert all(later < earlier for earlier, later in itertools.pairwise(seen))
    assert seen[-1] == pytest.approx(1e-4, rel=1e-3)


@pytest.mark.parametrize(("validation_fraction", "n_val"), [(0.25, 10), (0.1, 4)])
def test_validation_loss_is_taken_over_every_held_out_group(
    validation_fraction: float, n_val: int
) -> None:
    """Regression: validation batches dropped the remainder, so the quickstart's val_loss (and
    with it the plateau schedule and early stopping) saw 16 of its 26 held-out groups. Here 10
    held-out groups in batches of 8 (the old code used 8), and 4 in one short batch."""
    runtime.reset(0)
    models, inputs, targets = tiny_pinn(tiny_pair(16, n_train=40), 1)
    result = fit(models.train, inputs, targets, loss="poisson_nll", jit_compile=False, seed=3,
                 settings=TrainConfig(epochs=1, batch_size=8,
                                      validation_fraction=validation_fraction))
    train_idx, val_idx = validation_split(40, validation_fraction, seed=3)
    assert len(val_idx) == n_val and len(train_idx) == 40 - n_val
    assert not set(train_idx) & set(val_idx)
    # After one epoch the weights are those val_loss was taken with.
    expected = predict(models.train, {k: v[val_idx] for k, v in inputs.items()},
                       batch_size=64)[0]
    every_group = float(poisson_nll(targets[val_idx], expected))
    val_loss = result.history["val_loss"][0]
    assert val_loss == pytest.approx(every_group, rel=1e-5), (val_loss, every_group)
    if n_val > 8:  # the old val_loss, over the first full batch only, is measurably different
        first_batch = float(poisson_nll(targets[val_idx][:8], expected[:8]))
        assert abs(first_batch - every_group) > 1e-3 * abs(every_group), (first_batch, every_group)


def test_validation_split_is_seeded_and_refuses_bad_fractions() -> None:
    first, again = validation_split(26, 0.5, seed=1), validation_split(26, 0.5, seed=1)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    train, val = validation_split(512, 0.05, seed=0)
    assert len(val) == 26 and np.all(np.diff(val) > 0)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(512))
    assert len(validation_split(16, 0.0, seed=0)[1]) == 0
    with pytest.raises(ValueError, match=r"validation_fraction must lie in \[0, 1\), got 1.5"):
        validation_split(16, 1.5, seed=0)


def test_jit_compile_false_is_honoured() -> None:
    runtime.reset(0)
    models, inputs, targets = tiny_pinn(tiny_pair(16, n_train=16), 1)
    result = fit(models.train, inputs, targets, loss="poisson_nll", jit_compile=False, seed=0,
                 settings=TrainConfig(epochs=1, batch_size=8, validation_fraction=0.0))
    assert result.xla is False


DETERMINISM_PROBE = """
import json, warnings
import tensorflow as tf
from ptycho import runtime
from ptycho.config import TrainConfig
from ptycho.training import fit
from tests.helpers import tiny_pair, tiny_pinn
runtime.reset(0)
models, inputs, targets = tiny_pinn(tiny_pair(16, n_train=16), 1)
tf.config.experimental.enable_op_determinism()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = fit(models.train, inputs, targets, loss="poisson_nll", jit_compile=True, seed=0,
                 settings=TrainConfig(epochs=1, batch_size=8, validation_fraction=0.0))
print(json.dumps({"xla": result.xla, "warned": any("jit_compile" in str(w.message)
                                                   for w in caught)}))
"""


def test_xla_downgraded_by_op_determinism_is_reported_truthfully() -> None:
    """Keras silently turns XLA off under op determinism; fit must say so. (A subprocess: op
    determinism cannot be switched off again in a process.)"""
    result = subprocess.run([sys.executable, "-c", DETERMINISM_PROBE], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"xla": False, "warned": True}


def test_a_divergent_learning_rate_stops_with_a_clear_report() -> None:
    runtime.reset(0)
    models, inputs, targets = tiny_pinn(tiny_pair(16, n_train=32), 1)
    with pytest.raises(TrainingDiverged, match=r"training diverged: loss became (nan|inf)") as e:
        fit(models.train, inputs, targets, loss="poisson_nll", jit_compile=False, seed=0,
            settings=TrainConfig(epochs=5, batch_size=8, validation_fraction=0.0,
                                 learning_rate=1e6))
    assert "learning rate" in e.value.report
    for values in e.value.history.values():
        assert all(np.isfinite(values))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs=0: must be >= 1"),
        ({"batch_size": 100}, "batch_size=100 exceeds the 16 training groups"),
        ({"learning_rate": -1.0}, "learning_rate=-1.0: must be > 0"),
        ({"validation_fraction": 1.0}, r"validation_fraction=1.0: must be <= 0.5"),
        ({"loss": "l2"}, "loss must be one of"),
        ({"loss_scale": 0.0}, "loss_scale must be a positive finite number, got 0.0"),
        ({"min_delta": -1.0}, "min_delta=-1.0: must be >= 0"),
        ({"validation": np.array([3, 16])}, r"validation indices must lie in \[0, 16\), got 3..16"),
    ],
)
def test_bad_fit_arguments_are_refused(kwargs: dict, message: str) -> None:
    """Bad training settings are refused where they are made (:class:`TrainConfig`), bad
    arguments by ``fit``, each naming the value."""
    models, inputs, targets = tiny_pinn(tiny_pair(16, n_train=16), 1)
    fields = set(TrainConfig.__dataclass_fields__)
    arguments = {"loss": "poisson_nll", "jit_compile": False, "seed": 0,
                 **{k: v for k, v in kwargs.items() if k not in fields}}
    with pytest.raises(ValueError, match=message):
        settings = TrainConfig(**{"validation_fraction": 0.0,
                                  **{k: v for k, v in kwargs.items() if k in fields}})
        fit(models.train, inputs, targets, settings=settings, **arguments)


# N and gridsize up together, then both down to a shape this process has compiled before: the
# change that broke the reference in one process (other shapes, gridsize 3 among them, are built
# in test_factories; each more step here costs a fresh TensorFlow process, about 25 s)
SEQUENCE = [(16, 1), (32, 2), (16, 1)]


@pytest.mark.slow
def test_models_of_any_size_train_in_one_process_like_in_fresh_ones() -> None:
    """The failure that motivated ptycho: N and gridsize change between jobs of one process."""
    alone = {}
    processes = {
        config: subprocess.Popen(
            [sys.executable, "-c",
             "import json; from tests.helpers import train_steps; "
             f"print(json.dumps(train_steps({config[0]}, {config[1]})))"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for config in dict.fromkeys(SEQUENCE)  # one fresh process per distinct config
    }
    in_process = [(config, train_steps(*config)) for config in SEQUENCE]
    for config, process in processes.items():
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
        alone[config] = json.loads(out.strip().splitlines()[-1])
    for config, ours in in_process:
        fresh = alone[config]
        assert ours["xla"] and fresh["xla"], config
        assert ours["steps"] == fresh["steps"] == 2
        np.testing.assert_allclose(ours["loss"], fresh["loss"], rtol=1e-5, err_msg=str(config))
