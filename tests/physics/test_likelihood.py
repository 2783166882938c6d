"""The Poisson likelihood, in its forms: the training loss and the full NLL per photon differ by
a constant, and the profiled NLL is the NLL at the best photon scale."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import gammaln

from ptycho import physics


def _counts(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    intensities = rng.gamma(2.0, 1.0, (5, 16, 16))
    counts = rng.poisson(30.0 * intensities).astype(np.float64)
    return counts, intensities


def test_the_profiled_nll_is_the_nll_at_the_best_photon_scale() -> None:
    counts, intensities = _counts()

    def nll(log_scale: float) -> float:
        expected = np.exp(log_scale) * intensities
        return float((expected - counts * np.log(expected)).sum() / counts.sum())

    best = minimize_scalar(nll, bounds=(0.0, 8.0), method="bounded",
                           options={"xatol": 1e-10})
    assert np.exp(best.x) == pytest.approx(counts.sum() / intensities.sum(), rel=1e-5)
    profiled = float(physics.profiled_poisson_nll_per_photon(counts, intensities))
    assert profiled == pytest.approx(best.fun, rel=1e-9)
    # any other scale explains the counts worse
    assert profiled < nll(best.x + 0.05) and profiled < nll(best.x - 0.05)


def test_the_loss_and_the_nll_per_photon_differ_by_a_constant() -> None:
    counts, intensities = _counts(1)
    full = float(physics.poisson_nll_per_photon(counts, 30.0 * intensities))
    loss = float(physics.poisson_nll(counts, 30.0 * intensities))  # mean over pixels, no log k!
    constant = gammaln(counts + 1).sum() / counts.sum()
    assert full == pytest.approx(loss * counts.size / counts.sum() + constant, rel=1e-5)
