"""Factories: fresh models every call, any N and gridsize, tracked physics weights, per-sample
forward pass, XLA agreement, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ptycho import runtime
from ptycho.data import disc_probe
from ptycho.models import build_baseline, build_pinn, load_model, save_model
from ptycho.reconstruction.predict import predict
from tests.helpers import feed, tiny_pair, tiny_pinn

REFERENCE_PARAMS_N64 = 2.33e6
GENERATOR = {"bottleneck_filters": 256, "activation": "leaky_relu"}  # the schema's defaults
PINN = {**GENERATOR, "merge_iterations": 8}


def test_parameter_count_at_N64_is_within_half_of_the_reference() -> None:
    runtime.reset(0)
    models = build_pinn(**PINN, N=64, gridsize=1, probe=disc_probe(64))
    count = models.params_count
    print(f"PINN N=64 g=1 trainable parameters: {count:,}")
    assert 0.5 * REFERENCE_PARAMS_N64 <= count <= 1.5 * REFERENCE_PARAMS_N64


@pytest.mark.parametrize(("N", "gridsize"), [(16, 1), (16, 3), (32, 2), (64, 1), (128, 2)])
def test_any_power_of_two_and_gridsize_builds_with_the_right_shapes(N: int, gridsize: int) -> None:
    runtime.reset(0)
    channels = gridsize**2
    models = build_pinn(**PINN, N=N, gridsize=gridsize, probe=disc_probe(N), canvas_size=N + 8)
    diffraction = np.random.default_rng(0).random((2, N, N, channels)).astype(np.float32)
    inputs = [diffraction]
    if gridsize > 1:
        inputs.append(np.zeros((2, channels, 2), np.float32))
    counts = models.train(inputs if gridsize > 1 else diffraction)
    assert counts.shape == (2, N, N, channels)
    amplitude, phase = models.inference(diffraction)
    assert amplitude.shape == phase.shape == (2, N, N, channels)
    assert np.all((amplitude.numpy() > 0) & (amplitude.numpy() < 1))
    assert np.all(np.abs(phase.numpy()) < np.pi)
    baseline = build_baseline(**GENERATOR, N=N, gridsize=gridsize)
    assert baseline.train(diffraction).shape == (2, N, N, 2 * channels)


def test_bad_sizes_are_refused_naming_the_value() -> None:
    with pytest.raises(ValueError, match="N must be an integer power of two >= 16, got 48"):
        build_pinn(**PINN, N=48, gridsize=1, probe=None)
    with pytest.raises(ValueError, match="gridsize must be an integer >= 1, got 0"):
        build_baseline(**GENERATOR, N=32, gridsize=0)
    with pytest.raises(ValueError, match="canvas_size must be >= N \\+ 2 = 34"):
        build_pinn(**PINN, N=32, gridsize=2, probe=None, canvas_size=0)


def test_each_call_builds_fresh_independent_models() -> None:
    runtime.reset(0)
    first, second = (build_pinn(**PINN, N=16, gridsize=2, probe=disc_probe(16), canvas_size=24,
                                log_scale=1.0) for _ in range(2))
    first_ids = {id(w) for w in first.train.weights}
    assert first_ids.isdisjoint({id(w) for w in second.train.weights})
    scale = first.train.get_layer("intensity_scale").log_scale
    scale.assign(5.0)
    assert float(second.train.get_layer("intensity_scale").log_scale.numpy()) == 1.0


def test_probe_and_intensity_scale_are_tracked_weights() -> None:
    frozen = build_pinn(**PINN, N=16, gridsize=1, probe=disc_probe(16), log_scale=2.0)
    names = {w.path for w in frozen.train.weights}
    assert {"probe_illumination/probe_real", "probe_illumination/probe_imag",
            "intensity_scale/log_scale"} <= names
    trainable = {w.path for w in frozen.train.trainable_weights}
    assert "intensity_scale/log_scale" in trainable
    assert "probe_illumination/probe_real" not in trainable
    refined = build_pinn(**PINN, N=16, gridsize=1, probe=disc_probe(16), trainable_probe=True)
    assert "probe_illumination/probe_real" in {w.path for w in refined.train.trainable_weights}
    # Inference shares the generator's weights with training.
    assert {id(w) for w in frozen.inference.weights} <= {id(w) for w in frozen.train.weights}


@pytest.mark.parametrize("batch", [1, 15, 16, 17])
def test_pinn_forward_pass_is_per_sample_at_gridsize_two(batch: int) -> None:
    runtime.reset(0)
    models = build_pinn(**PINN, N=16, gridsize=2, probe=disc_probe(16), canvas_size=26,
                        log_scale=3.0)
    rng = np.random.default_rng(batch)
    diffraction = rng.random((batch, 16, 16, 4)).astype(np.float32)
    offsets = rng.uniform(-4, 4, (batch, 4, 2)).astype(np.float32)
    before = models.train([diffraction, offsets]).numpy()
    j = batch // 2
    diffraction[j] += 0.5
    offsets[j] += 1.0
    after = models.train([diffraction, offsets]).numpy()
    others = np.arange(batch) != j
    scale = np.abs(before).max()
    np.testing.assert_allclose(after[others], before[others], rtol=0, atol=1e-6 * scale)
    assert np.abs(after[j] - before[j]).max() > 1e-3 * scale


@pytest.mark.parametrize("gridsize", [1, 2])
def test_xla_and_eager_forward_passes_agree(gridsize: int) -> None:
    runtime.reset(0)
    pair = tiny_pair(32, n_train=16)
    models, inputs, _ = tiny_pinn(pair, gridsize)
    batch = feed(models, inputs)
    eager = models.train(batch).numpy()
    xla = tf.function(lambda x: models.train(x), jit_compile=True)(batch).numpy()
    np.testing.assert_allclose(xla, eager, rtol=1e-5, atol=1e-5 * np.abs(eager).max())


def test_save_then_load_gives_identical_predictions(tmp_path: Path) -> None:
    runtime.reset(0)
    pair = tiny_pair(16, n_train=12)
    models, inputs, _ = tiny_pinn(pair, 2)
    models.train.get_layer("intensity_scale").log_scale.assign(4.2)
    folder = save_model(tmp_path / "model", models, input_scale=0.123)
    loaded = load_model(folder)
    assert loaded.input_scale == 0.123
    assert loaded.models.spec == models.spec
    batch = feed(models, inputs)
    np.testing.assert_array_equal(loaded.models.train(batch).numpy(), models.train(batch).numpy())
    for original, restored in zip(predict(models.inference, inputs, batch_size=8),
                                  predict(loaded.models.inference, inputs, batch_size=8),
                                  strict=True):
        np.testing.assert_array_equal(restored, original)


def test_loading_a_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"model\.json is missing"):
        load_model(tmp_path)


def test_the_activation_is_built_and_saved_and_old_models_load_as_relu(tmp_path: Path) -> None:
    """Leaky ReLU by default (no unit can die, see ``NetworkSettings.activation``); a model saved
    before the activation was recorded was built with ReLU, and loads as one."""
    import json

    runtime.reset(0)
    leaky = build_pinn(**PINN, N=16, gridsize=1, probe=disc_probe(16))
    relu = build_pinn(**{**PINN, "activation": "relu"}, N=16, gridsize=1, probe=disc_probe(16))
    generator = leaky.train.get_layer("generator")
    assert leaky.spec.activation == "leaky_relu" and relu.spec.activation == "relu"
    assert "leaky_relu" in str(generator.get_layer("amplitude_decoder_refine").activation)
    x = tf.constant([-2.0, 3.0])
    np.testing.assert_allclose(generator.get_layer("encoder_level0_conv1").activation(x),
                               [-0.4, 3.0], rtol=1e-6)  # slope 0.2 below 0
    np.testing.assert_allclose(relu.train.get_layer("generator").get_layer(
        "encoder_level0_conv1").activation(x), [0.0, 3.0])

    folder = save_model(tmp_path / "model", relu, input_scale=1.0)
    manifest = json.loads((folder / "model.json").read_text())
    del manifest["spec"]["activation"]  # as written before the activation was recorded
    (folder / "model.json").write_text(json.dumps(manifest))
    assert load_model(folder).models.spec.activation == "relu"

    with pytest.raises(ValueError, match=r"activation must be one of \['leaky_relu', 'relu'\], "
                                         r"got 'tanh'"):
        build_pinn(**{**PINN, "activation": "tanh"}, N=16, gridsize=1, probe=disc_probe(16))


def test_detector_head_masks_counts_and_gradients_and_is_saved(tmp_path: Path) -> None:
    """With a detector the PINN's counts are ``m·(λ + b)``: 0 at masked pixels, where counts
    (whatever they hold) then move no weight; the mask is a weight, loaded with the model."""
    from ptycho.physics import Detector, beamstop_mask
    from ptycho.training.losses import poisson_nll

    runtime.reset(0)
    mask = beamstop_mask(16, 3)
    detector = Detector(mask, background=0.25)
    models = build_pinn(**PINN, N=16, gridsize=1, probe=disc_probe(16), log_scale=1.0,
                        detector=detector)
    assert models.spec.detector and models.spec.background == 0.25
    diffraction = tf.random.stateless_uniform((4, 16, 16, 1), seed=(1, 2))
    counts = models.train(diffraction).numpy()
    assert np.all(counts[:, ~mask] == 0) and np.all(counts[:, mask] >= 0.25)
    measured = np.random.default_rng(0).poisson(counts).astype(np.float32)
    garbage = measured.copy()
    garbage[:, ~mask] = 99.0
    gradients = []
    for target in (measured, garbage):
        with tf.GradientTape() as tape:
            loss = poisson_nll(target, models.train(diffraction))
        gradients.append(tape.gradient(loss, models.train.trainable_weights))
    for first, second in zip(*gradients, strict=True):
        np.testing.assert_array_equal(first.numpy(), second.numpy())
    folder = save_model(tmp_path / "model", models, input_scale=1.0)
    loaded = load_model(folder).models
    assert loaded.spec == models.spec
    np.testing.assert_array_equal(loaded.train(diffraction).numpy(), counts)
    ideal = build_pinn(**PINN, N=16, gridsize=1, probe=disc_probe(16), detector=Detector())
    assert not ideal.spec.detector and "detector" not in [layer.name for layer in
                                                          ideal.train.layers]
