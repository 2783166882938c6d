"""The exact simulator: the reconstructors' model where the two must agree, an independent
quadrature of the detector pixels where they must not, and data no arm's model shares."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.config import validate
from ptycho.data import make_datasets, make_object
from ptycho.data.simulation import cache_key
from ptycho.physics import Ptychography, block_average, exact_intensities, fourier_upsample
from ptycho.pipeline import simulation_spec

N, SIDE = 16, 48


def _smooth_object() -> np.ndarray:
    """A band-limited object (a few Fourier components): interpolation is exact for it."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] * (2 * np.pi / SIDE)
    amplitude = 0.7 + 0.2 * np.cos(3 * xx) * np.sin(2 * yy)
    return (amplitude * np.exp(0.5j * np.sin(2 * (xx + yy)))).astype(np.complex64)


def _probe() -> np.ndarray:
    yy, xx = np.mgrid[0:N, 0:N]
    return np.exp(-((yy - N / 2) ** 2 + (xx - N / 2) ** 2) / 18.0).astype(np.complex64)


POSITIONS = np.array([[20.0, 20.0], [24.0, 22.0], [25.0, 30.0]])
SUBPIXEL = POSITIONS + np.array([[0.3, 0.6], [0.5, 0.5], [0.1, 0.9]])


def test_at_the_reconstruction_grid_it_is_the_reconstructors_model() -> None:
    """K = L = 1 and whole-pixel positions: the operator's |A o|² to float precision."""
    obj, probe = _smooth_object(), _probe()
    model = Ptychography(probe, POSITIONS, obj.shape).intensities(obj).numpy()
    exact = exact_intensities(obj, probe, POSITIONS, N=N, oversampling=1, pixel_subsamples=1)
    np.testing.assert_allclose(exact, model, rtol=0, atol=1e-6 * model.max())


def test_a_finer_grid_of_a_band_limited_object_changes_only_the_interpolation() -> None:
    """A band-limited object and probe sampled 2 or 4 times finer give the same patterns
    (the object is the same function); they differ from the model only by its bilinear
    sub-pixel interpolation, under 1% of the peak here."""
    obj, probe = _smooth_object(), _probe()
    model = Ptychography(probe, SUBPIXEL, obj.shape).intensities(obj).numpy()
    finer = {K: exact_intensities(fourier_upsample(obj, K), fourier_upsample(probe, K), SUBPIXEL,
                                  N=N, oversampling=K, pixel_subsamples=1) for K in (1, 2, 4)}
    np.testing.assert_allclose(finer[2], finer[4], atol=1e-4 * model.max())
    np.testing.assert_allclose(finer[1], finer[4], atol=1e-3 * model.max())
    assert 1e-3 < np.abs(finer[4] - model).max() / model.max() < 1e-2


def test_detector_pixels_are_integrated_as_a_direct_quadrature_says() -> None:
    """L = 3: each detector pixel's value is the mean of |F|² at the 3 × 3 points q + (-1/3,
    0, 1/3) about its centre, checked against an explicit DFT of the fine exit wave at those
    frequencies (no FFT, no padding)."""
    K, L = 2, 3
    fine_obj, fine_probe = fourier_upsample(_smooth_object(), K), fourier_upsample(_probe(), K)
    position = np.array([[24.0, 22.0]])
    exact = exact_intensities(fine_obj, fine_probe, position, N=N, oversampling=K,
                              pixel_subsamples=L)[0]
    top = int((position[0, 1] - N / 2) * K)
    left = int((position[0, 0] - N / 2) * K)
    wave = fine_probe * fine_obj[top:top + N * K, left:left + N * K]
    samples = np.arange(N * K)
    frequencies = (np.arange(-N // 2, N // 2)[:, None] + (np.arange(L) - 1)[None, :] / L).ravel()
    # detector pixel q is q/N cycles per coarse pixel; fine sample m sits at coarse m/K
    dft = np.exp(-2j * np.pi * np.outer(frequencies, samples) / (N * K))
    field = dft @ wave.astype(np.complex128) @ dft.T / (N * K * K)
    direct = (np.abs(field) ** 2).reshape(N, L, N, L).mean(axis=(1, 3))
    np.testing.assert_allclose(exact, direct, rtol=1e-4, atol=1e-7 * direct.max())
    point = exact_intensities(fine_obj, fine_probe, position, N=N, oversampling=K,
                              pixel_subsamples=1)[0]
    assert np.abs(exact - point).max() > 0.02 * point.max()  # integrating matters


def test_upsampling_and_block_averages_are_consistent() -> None:
    obj = _smooth_object()
    np.testing.assert_allclose(fourier_upsample(obj, 3)[1::3, 1::3], obj, atol=1e-5)
    for K in (2, 4):
        assert np.abs(block_average(fourier_upsample(obj, K), K) - obj).max() < 5e-3
    with pytest.raises(ValueError, match="not a multiple"):
        block_average(np.ones((5, 6)), 2)
    with pytest.raises(ValueError, match="odd"):
        exact_intensities(obj, _probe(), POSITIONS, N=N, oversampling=1, pixel_subsamples=2)


@pytest.mark.parametrize("kind", ["lines", "grf"])
def test_a_finer_object_is_the_same_object(kind: str) -> None:
    """Rendered 4 times finer, the object keeps its structure: its block average is the
    coarse rendering within a small fraction of the contrast (the lines' ends and the fine
    texture differ, as they should)."""
    spec = validate({"N": 16, "data": {"object": {"kind": kind, "size": SIDE}}}).data.object
    coarse, fine = make_object(spec, 3), make_object(spec, 3, oversampling=4)
    assert fine.shape == (4 * SIDE, 4 * SIDE) and fine.dtype == np.complex64
    difference = np.abs(block_average(fine, 4) - coarse)
    assert difference.mean() < 0.05 and np.array_equal(fine, make_object(spec, 3, 4))


def test_exact_datasets_are_reproducible_scored_on_the_block_average_and_keyed_apart() -> None:
    base = {"N": 16, "dose": 1e4, "data": {"object": {"size": 40}, "n_train": 24,
                                           "cache": False}}
    exact_job = validate({**base, "data": {**base["data"], "simulator": "exact"}})
    pair = make_datasets(simulation_spec(exact_job))
    again = make_datasets(simulation_spec(exact_job))
    np.testing.assert_array_equal(pair.train.counts, again.train.counts)
    assert pair.train.obj.shape == (40, 40) and pair.train.probe.shape == (16, 16)
    assert pair.train.counts.sum(axis=(1, 2)).mean() == pytest.approx(1e4, rel=0.02)
    bilinear = validate(base)
    assert cache_key(simulation_spec(exact_job)) != cache_key(simulation_spec(bilinear))
    # the simulator's settings count only when it is exact: bilinear jobs keep their hashes
    unused = validate({**base, "data": {**base["data"], "oversampling": 8}})
    assert unused.config_hash == bilinear.config_hash != exact_job.config_hash
    finer = validate({**base, "data": {**base["data"], "simulator": "exact", "oversampling": 8}})
    assert finer.config_hash != exact_job.config_hash
