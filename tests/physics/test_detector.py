"""The detector (docs/physics.md §12.1): a masked pixel contributes nothing to any loss, likelihood,
gradient or bound; the background and the flaws are simulated as stated."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ptycho import physics
from ptycho.data import disc_probe
from ptycho.evaluation.limit import free_pixels
from ptycho.physics import Detector, beamstop_mask, detect
from ptycho.training.losses import LOSSES

N = 16
MASK = beamstop_mask(N, 2.5)


def _signal(seed: int = 0, M: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 40.0, (M, N, N)).astype(np.float32)


def test_beamstop_masks_the_central_pixels() -> None:
    assert not MASK[N // 2, N // 2] and not MASK[N // 2 + 2, N // 2]
    assert MASK[N // 2 + 3, N // 2] and MASK[0, 0]
    assert beamstop_mask(N, 0).all()
    with pytest.raises(ValueError, match="beamstop radius"):
        beamstop_mask(N, 8)


@pytest.mark.parametrize("name", ["poisson_nll", "mae"])
def test_masked_pixel_adds_nothing_to_training_loss_or_gradient(name: str) -> None:
    """λ through the detector is 0 and constant at a masked pixel: whatever the model predicts
    there and whatever was counted there, the loss's gradient in the prediction is 0 there and
    the gradient elsewhere is unchanged."""
    detector = Detector(MASK, background=0.3)
    counts = detect(_signal(), detector, seed=1)
    loss = LOSSES[name]
    garbage = counts.copy()
    garbage[:, ~MASK] = 1234.0  # counts a masked pixel might hold before the scan zeroes them
    gradients = []
    for measured in (counts, garbage):
        signal = tf.Variable(_signal(seed=2))
        with tf.GradientTape() as tape:
            value = loss(tf.constant(measured), detector.expected(signal))
        gradients.append(tape.gradient(value, signal).numpy())
        assert np.all(gradients[-1][:, ~MASK] == 0)
    np.testing.assert_array_equal(gradients[0], gradients[1])


def test_masked_pixel_adds_nothing_to_the_likelihoods() -> None:
    """The full NLL per photon and the profiled one equal those of the measured pixels alone."""
    detector = Detector(MASK, background=0.0)
    signal = _signal()
    counts = detect(signal, detector, seed=3)
    expected = detector.expected(signal).numpy()
    measured = np.broadcast_to(MASK, counts.shape)
    full = float(physics.poisson_nll_per_photon(counts, expected))
    alone = float(physics.poisson_nll_per_photon(counts[measured], expected[measured]))
    assert full == pytest.approx(alone, rel=1e-12)
    profiled = float(physics.profiled_poisson_nll_per_photon(counts, expected))
    profiled_alone = float(physics.profiled_poisson_nll_per_photon(counts[measured],
                                                                  expected[measured]))
    assert profiled == pytest.approx(profiled_alone, rel=1e-6)


def test_fisher_information_counts_measured_pixels_with_background() -> None:
    """δᵀ I δ = Σ_measured (∂λ)²/(λ + b), ∂λ by central differences of the forward model, with
    the weights the pipeline passes (mask · λ/(λ + b) at s² = 1)."""
    rng = np.random.default_rng(4)
    shape = (40, 40)
    obj = (0.8 + 0.2 * rng.random(shape)) * np.exp(0.5j * rng.random(shape))
    positions = rng.uniform(N / 2 + 1, 40 - N / 2 - 2, size=(6, 2))
    operator = physics.Ptychography(disc_probe(N), positions, shape)
    detector = Detector(MASK, background=0.05)
    signal = operator.intensities(obj.astype(np.complex64)).numpy().astype(np.float64)
    fisher = physics.poisson_fisher(operator, obj, free_pixels(operator),
                                    detector.information_weights(signal.astype(np.float32)))
    free = free_pixels(operator)
    delta = (rng.standard_normal(int(free.sum())) + 1j * rng.standard_normal(int(free.sum())))
    quadratic = float(np.vdot(delta, fisher(delta)).real)
    step = np.zeros(shape, np.complex128)
    step[free] = delta
    eps = 1e-3

    def intensities(image: np.ndarray) -> np.ndarray:
        return operator.intensities(image.astype(np.complex64)).numpy().astype(np.float64)

    derivative = (intensities(obj + eps * step) - intensities(obj - eps * step)) / (2 * eps)
    direct = float(np.sum((derivative**2 / (signal + detector.background))[:, MASK]))
    assert quadratic == pytest.approx(direct, rel=2e-2)


def test_detect_background_mask_and_flaws() -> None:
    signal = np.full((200, N, N), 2.0, np.float32)
    detector = Detector(MASK, background=0.5)
    counts = detect(signal, detector, seed=5)
    assert np.all(counts[:, ~MASK] == 0)
    assert counts[:, MASK].mean() == pytest.approx(2.5, rel=0.02)
    np.testing.assert_array_equal(counts, detect(signal, detector, seed=5))
    assert detect(signal, detector, seed=5, saturation=3).max() == 3
    noisy = detect(signal, detector, seed=5, read_noise=1.0)
    assert np.all(noisy[:, ~MASK] == 0) and noisy.min() >= 0
    assert noisy[:, MASK].var() > counts[:, MASK].var() + 0.5
    # An ideal detector is the bare Poisson sampler, bit for bit (earlier datasets unchanged).
    np.testing.assert_array_equal(detect(signal, Detector(), seed=5),
                                  physics.poisson_counts(signal, 5).numpy())


def test_detector_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="background"):
        Detector(None, background=-1.0)
    with pytest.raises(ValueError, match="no pixel"):
        Detector(np.zeros((N, N), bool))
    with pytest.raises(ValueError, match="bool"):
        Detector(np.ones((N, N), np.float32))
    assert Detector(np.ones((N, N), bool)).ideal
