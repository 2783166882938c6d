"""Dose scaling and Poisson sampling: photon counts equal the dose, noise is Poisson, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho import physics
from ptycho.data import disc_probe, simulate


def _lines_like_object(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    amplitude = 0.5 + 0.5 * rng.random((size, size))
    phase = rng.uniform(-1, 1, (size, size))
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


@pytest.mark.parametrize("dose", [1e2, 1e4, 1e6, 1e9])
def test_mean_counts_per_pattern_equal_the_dose(dose: float) -> None:
    N, n_patterns = 16, 64
    obj = _lines_like_object(48, seed=0)
    positions = np.random.default_rng(1).uniform(8, 39, size=(n_patterns, 2))
    data = simulate(obj, disc_probe(N), positions, dose=dose, seed=7)
    totals = data.counts.sum(axis=(1, 2), dtype=np.float64)
    # Given λ, Σ_j Σk_j is Poisson with mean M·dose: the standard error of the mean is √(dose/M).
    standard_error = np.sqrt(dose / n_patterns)
    assert abs(totals.mean() - dose) < 3 * standard_error
    assert data.measured_dose == pytest.approx(totals.mean())
    assert data.dose == dose
    assert np.all(data.counts == np.round(data.counts)), "counts must be integers"


@pytest.mark.parametrize("rate", [0.3, 5.0, 200.0, 1e5])
def test_counts_have_poisson_variance(rate: float) -> None:
    expected = np.full((4000, 4, 4), rate, np.float32)
    counts = physics.poisson_counts(expected, seed=11).numpy().astype(np.float64)
    ratio = counts.var(axis=0) / counts.mean(axis=0)
    # Var/mean of 4000 Poisson draws has a relative standard error of about √(2/4000) ≈ 2.2 %.
    assert np.all(np.abs(ratio - 1.0) < 0.1), ratio
    assert abs(counts.mean() / rate - 1.0) < 0.02


def test_simulated_pixels_are_poisson_around_their_expectation() -> None:
    """Var/mean ≈ 1 per pixel across noise seeds of one simulated pattern set."""
    N = 16
    obj = _lines_like_object(40, seed=3)
    positions = np.array([[20.0, 20.0]])
    draws = np.stack(
        [simulate(obj, disc_probe(N), positions, dose=1e4, seed=s).counts[0] for s in range(300)]
    ).astype(np.float64)
    mean = draws.mean(axis=0)
    bright = mean > 5
    ratio = draws.var(axis=0)[bright] / mean[bright]
    assert bright.sum() > 10
    assert abs(np.median(ratio) - 1.0) < 0.1


def test_poisson_sampling_is_seeded() -> None:
    expected = np.full((8, 16, 16), 3.0, np.float32)
    first = physics.poisson_counts(expected, seed=5).numpy()
    again = physics.poisson_counts(expected, seed=5).numpy()
    other = physics.poisson_counts(expected, seed=6).numpy()
    np.testing.assert_array_equal(first, again)
    assert np.any(first != other)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "abc", None])
def test_bad_dose_is_refused_with_its_value(bad: object) -> None:
    """Checked once, where a dose enters the data (``simulate``; the config's is checked by
    ``validate``): the physics below takes it as given."""
    obj = np.ones((48, 48), np.complex64)
    with pytest.raises(ValueError, match="dose") as raised:
        simulate(obj, disc_probe(16), np.array([[24.0, 24.0]]), dose=bad, seed=0)  # type: ignore
    assert repr(bad) in str(raised.value)


# --- the forward model at a dose ------------------------------------------------------------


def _patches(n: int, N: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    amplitude = 0.5 + 0.5 * rng.random((n, N, N))
    return (amplitude * np.exp(1j * rng.uniform(-1, 1, (n, N, N)))).astype(np.complex64)


@pytest.mark.parametrize("dose", [1e2, 1e6, 1e9])
def test_expected_counts_at_dose_have_a_mean_total_of_the_dose(dose: float) -> None:
    expected = physics.expected_counts_at_dose(_patches(12, 16, seed=1), disc_probe(16), dose)
    assert expected.shape == (12, 16, 16)
    assert expected.dtype == np.float32
    totals = expected.numpy().sum(axis=(1, 2), dtype=np.float64)
    assert totals.mean() == pytest.approx(dose, rel=1e-5)
    assert np.all(expected.numpy() >= 0)


def test_simulate_draws_its_counts_from_expected_counts_at_dose() -> None:
    """The one forward model equals the chain ``simulate`` spelled out (HEAD's numbers), bit for
    bit, so putting it in its place leaves every simulated dataset unchanged."""
    N, dose, seed = 32, 1e4, 3
    obj = _lines_like_object(96, seed=0)
    positions = np.random.default_rng(2).uniform(16, 79, size=(40, 2))
    probe = disc_probe(N)
    data = simulate(obj, probe, positions, dose=dose, seed=seed)
    expected = physics.expected_counts_at_dose(data.patches, probe, dose)
    # The chain as it stood in ptycho.data.dataset.simulate and ptycho.job._forward_counts:
    far_intensity = physics.intensity(physics.far_field(physics.illuminate(probe, data.patches)))
    chain = physics.expected_counts(far_intensity, physics.dose_scale(far_intensity, dose))
    np.testing.assert_array_equal(expected.numpy(), chain.numpy())
    np.testing.assert_array_equal(physics.poisson_counts(expected, seed).numpy(), data.counts)


def test_expected_counts_at_dose_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"patches \(M, N, N\) and a probe \(N, N\), got patches"):
        physics.expected_counts_at_dose(_patches(2, 16, seed=0), disc_probe(32), 1e3)
