"""Measured scans: thinning's statistics, a file fitted to N, the export's round trip, and the
refusal of malformed files and doses before any work (docs/physics.md §13)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ptycho.config import ConfigError, MeasuredConfig, validate
from ptycho.data.cxi import read_cxi, write_cxi
from ptycho.data.measured import (
    MeasuredSpec,
    bin_frames,
    fourier_crop,
    load_measured,
    thin,
    thinning_fraction,
)
from ptycho.truth_free import half_split
from tests.helpers import exported_scan

# --- thinning ----------------------------------------------------------------------------------


def test_thinning_poisson_counts_gives_poisson_counts_at_the_lower_mean() -> None:
    """k ~ Poisson(λ) kept with probability p is Poisson(pλ): mean pλ, variance/mean 1."""
    rng = np.random.default_rng(1)
    lam = np.array([0.5, 3.0, 40.0, 900.0])
    counts = rng.poisson(lam, size=(40000, 4)).astype(np.float32)[:, None, :]
    for fraction in (0.5, 0.1, 0.01):
        kept = thin(counts, fraction, seed=7)[:, 0, :]
        mean, variance = kept.mean(axis=0), kept.var(axis=0)
        np.testing.assert_allclose(mean, fraction * lam, rtol=0.05, atol=0.01)
        significant = fraction * lam > 0.1
        np.testing.assert_allclose((variance / mean)[significant], 1.0, atol=0.05)
        assert np.all(kept == np.rint(kept)) and kept.min() >= 0


def test_the_kept_and_the_dropped_photons_are_independent() -> None:
    """Poisson thinning splits a Poisson count into two independent Poisson counts: the kept
    and the dropped ones do not correlate (a binomial of a fixed count would: -1)."""
    rng = np.random.default_rng(2)
    counts = rng.poisson(25.0, size=(200000, 1, 1)).astype(np.float32)
    kept = thin(counts, 0.3, seed=3).ravel()
    dropped = counts.ravel() - kept
    assert abs(np.corrcoef(kept, dropped)[0, 1]) < 0.01
    assert dropped.mean() == pytest.approx(0.7 * 25.0, rel=0.01)


def test_two_thinnings_of_one_scan_share_its_photons_but_not_their_draws() -> None:
    """The same seed thins identically; another seed draws again. Two thinnings of one scan are
    Poisson each, and their covariance is p²λ (the photons they share), so their excess over
    the source's is independent: corr(k1 - E, k2 - E | k) = 0."""
    rng = np.random.default_rng(4)
    counts = rng.poisson(30.0, size=(100000, 1, 1)).astype(np.float32)
    first, again = thin(counts, 0.5, seed=11), thin(counts, 0.5, seed=11)
    second = thin(counts, 0.5, seed=12)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)
    residual_1 = first.ravel() - 0.5 * counts.ravel()
    residual_2 = second.ravel() - 0.5 * counts.ravel()
    assert abs(np.corrcoef(residual_1, residual_2)[0, 1]) < 0.01
    covariance = np.cov(first.ravel(), second.ravel())[0, 1]
    assert covariance == pytest.approx(0.25 * 30.0, rel=0.05)


def test_thinning_twice_is_thinning_once_by_the_product() -> None:
    rng = np.random.default_rng(5)
    counts = rng.poisson(200.0, size=(50000, 1, 1)).astype(np.float32)
    twice = thin(thin(counts, 0.5, seed=1), 0.2, seed=2)
    once = thin(counts, 0.1, seed=3)
    assert twice.mean() == pytest.approx(once.mean(), rel=0.01)
    assert twice.var() == pytest.approx(once.var(), rel=0.03)


def test_a_dose_above_the_measured_one_is_refused_and_one_within_its_noise_is_full() -> None:
    with pytest.raises(ValueError, match=r"dose=2e\+06 is above the scan's measured dose of "
                                         r"999950 photons per pattern"):
        thinning_fraction(999950.0, 2e6, 100)
    assert thinning_fraction(999950.0, 1e6, 100) == 1.0  # 50 photons: within 3·√(1e4)
    assert thinning_fraction(1000050.0, 1e6, 100) == 1.0  # below it, within its noise too
    assert thinning_fraction(1000050.0, 0.999e6, 100) == pytest.approx(0.999e6 / 1000050.0)
    assert thinning_fraction(1e6, 1e4, 100) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="must lie in"):
        thin(np.ones((1, 2, 2), np.float32), 1.5, seed=0)


# --- a file fitted to N ------------------------------------------------------------------------


def test_an_exported_scan_loads_back_to_the_simulated_numbers(tmp_path: Path) -> None:
    scan = exported_scan(tmp_path / "scan.cxi", N=16, n_train=24, dose=1e5)
    loaded = load_measured(tmp_path / "scan.cxi", 16, MeasuredConfig())
    np.testing.assert_array_equal(loaded.counts, scan.counts)
    np.testing.assert_allclose(loaded.positions, scan.positions, atol=1e-9)
    np.testing.assert_allclose(loaded.probe, scan.probe, atol=1e-6)
    np.testing.assert_array_equal(loaded.obj, scan.obj)
    np.testing.assert_allclose(loaded.patches, scan.patches, atol=1e-6)
    assert loaded.nominal_positions is None and loaded.has_truth
    assert loaded.metadata["pixel_size_m"] == pytest.approx(1.5498e-10 * 2.0 / (16 * 75e-6))


def test_a_scan_without_its_truth_gets_a_grid_that_holds_every_patch(tmp_path: Path) -> None:
    exported_scan(tmp_path / "scan.cxi", N=16, n_train=24)
    raw = read_cxi(tmp_path / "scan.cxi")
    write_cxi(tmp_path / "measured.cxi", replace(raw, truth=None))
    loaded = load_measured(tmp_path / "measured.cxi", 16, MeasuredConfig())
    assert not loaded.has_truth and loaded.obj is None and loaded.patches is None
    height, width = loaded.object_shape
    assert loaded.positions.min() >= 8 and loaded.positions[:, 0].max() <= width - 9
    assert loaded.positions[:, 1].max() <= height - 9
    # the same scan up to a shift of the grid's origin
    original = load_measured(tmp_path / "scan.cxi", 16, MeasuredConfig())
    shift = loaded.positions - original.positions
    np.testing.assert_allclose(shift, shift[0] + 0 * shift, atol=1e-9)


def test_binning_and_cropping_scale_the_positions_and_resample_the_probe(tmp_path: Path) -> None:
    exported_scan(tmp_path / "scan.cxi", N=32, n_train=24)
    raw = read_cxi(tmp_path / "scan.cxi")
    write_cxi(tmp_path / "measured.cxi", replace(raw, truth=None))
    full = load_measured(tmp_path / "measured.cxi", 32, MeasuredConfig())
    cropped = load_measured(tmp_path / "measured.cxi", 16, MeasuredConfig())
    binned = load_measured(tmp_path / "measured.cxi", 16, MeasuredConfig(bin=2))
    # cropping to 16 of 32 detector pixels halves the sample's sampling: positions halve
    step = np.ptp(full.positions, axis=0)
    np.testing.assert_allclose(np.ptp(cropped.positions, axis=0), step / 2, atol=1e-9)
    np.testing.assert_allclose(np.ptp(binned.positions, axis=0), step, atol=1e-9)
    np.testing.assert_array_equal(cropped.counts, full.counts[:, 8:24, 8:24])
    np.testing.assert_array_equal(binned.counts, bin_frames(full.counts, 2))
    assert binned.measured_dose == pytest.approx(full.measured_dose)
    # the probe's far field, cropped, is the full one's centre (amplitude scale aside)
    far_full = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(full.probe))))[8:24, 8:24]
    far_crop = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(cropped.probe))))
    np.testing.assert_allclose(far_crop / far_crop.max(), far_full / far_full.max(), atol=1e-5)
    assert fourier_crop(full.probe, 32) is not full.probe


def test_a_thinned_scan_is_cached_by_its_file_and_dose(tmp_path: Path) -> None:
    path = tmp_path / "scan.cxi"
    exported_scan(path, N=16, n_train=24, dose=1e5)
    config = validate({"N": 16, "dose": 1e3, "data": {"source": "file", "path": str(path)}})
    assert config.data.n_train == 24 and len(config.data.digest) == 64
    pair = MeasuredSpec(16, 1e3, 0, config.data).make()
    assert pair.train is pair.test
    assert pair.train.measured_dose == pytest.approx(1e3, rel=0.05)
    assert pair.train.metadata["thinning_fraction"] == pytest.approx(1e3 / 1e5, rel=0.01)
    other = MeasuredSpec(16, 1e3, 1, config.data)
    assert MeasuredSpec(16, 1e3, 0, config.data).fingerprint() != other.fingerprint()


# --- half-split --------------------------------------------------------------------------------


def test_the_half_split_interleaves_a_raster_as_a_checkerboard() -> None:
    x, y = np.meshgrid(np.arange(6) * 4.0 + 20, np.arange(5) * 4.0 + 20)
    positions = np.stack([x.ravel(), y.ravel()], axis=1) + 0.3
    first, second = half_split(positions)
    assert sorted([*first, *second]) == list(range(30)) and abs(len(first) - len(second)) <= 1
    for half in (first, second):  # every cell's four neighbours are in the other half
        ours = {tuple(p) for p in positions[half]}
        for px, py in positions[half]:
            assert (px + 4, py) not in ours and (px, py + 4) not in ours
        assert np.ptp(positions[half], axis=0).min() >= 16 - 1e-9  # each half spans the field


# --- refusals before any work ------------------------------------------------------------------


def _malformed(tmp_path: Path, name: str) -> str:
    """Files a new user might bring (each refused when the job is validated or loaded)."""
    path = tmp_path / name
    if name == "text.cxi":
        path.write_text("not a scan")
    elif name == "no_diffraction.npz":
        np.savez(path, xcoords=np.zeros(4), ycoords=np.zeros(4))
    elif name == "one_pattern.npz":
        np.savez(path, diffraction=np.ones((1, 16, 16), np.float32))
    elif name == "scan.tif":
        path.write_text("tiff")
    return str(path)


@pytest.mark.parametrize(("name", "message"), [
    ("missing.cxi", "data.path='.*missing.cxi': file not found"),
    ("scan.tif", r"must be one of \['.cxi'"),
    ("text.cxi", r"not an HDF5 \(CXI\) file"),
    ("no_diffraction.npz", r"NPZ key 'diffraction' \(the \(M, N, N\) amplitudes √counts\) is "
                           "missing"),
    ("one_pattern.npz", r"holds 1 diffraction pattern\(s\): a scan needs several"),
])
def test_a_malformed_file_is_refused_when_the_job_is_validated(tmp_path: Path, name: str,
                                                                message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate({"N": 16, "data": {"source": "file", "path": _malformed(tmp_path, name)}})


def test_a_file_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scan.cxi"
    exported_scan(path, N=16)
    with pytest.raises(ConfigError, match=r"data.digest='0+': the file .* has sha256 [0-9a-f]{64}"):
        validate({"N": 16, "data": {"source": "file", "path": str(path), "digest": "0" * 64}})


def test_measured_data_refuse_what_needs_a_truth_or_a_second_scan(tmp_path: Path) -> None:
    path = tmp_path / "scan.cxi"
    exported_scan(path, N=16)
    data = {"source": "file", "path": str(path)}
    with pytest.raises(ConfigError, match=r"model\.kind='baseline': trains on the true patches"):
        validate({"N": 16, "model": {"kind": "baseline"}, "data": data})
    with pytest.raises(ConfigError, match=r"data\.design='generalize': a measured scan is one"):
        validate({"N": 16, "data": {**data, "design": "generalize"}})


@pytest.mark.parametrize(("change", "message"), [
    ({"bin": 4}, r"frames of 16 x 16 pixels binned by 4 are 4 x 4, smaller than N=16"),
    ({"strip_geometry": True}, r"no entry_1/instrument_1/source_1/energy, .*give "
                               r"data.measured.pixel_size"),
    ({"non_integer": True}, r"NPZ key 'diffraction'² is not integer photon counts \(e.g. "),
    ({"dose": 1e9}, r"dose=1e\+09 is above the scan's measured dose"),
])
def test_a_file_that_cannot_give_the_job_its_data_is_refused_on_loading(
        tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "scan.cxi"
    exported_scan(path, N=16)
    raw = read_cxi(path)
    settings = MeasuredConfig(bin=change.get("bin", 1))
    if change.get("strip_geometry"):
        write_cxi(path, replace(raw, wavelength=None, distance=None, detector_pixel=None,
                                truth=None))
    if change.get("non_integer"):
        path = tmp_path / "scan.npz"
        np.savez(path, diffraction=np.sqrt(raw.counts + 0.4), xcoords=np.arange(24.0),
                 ycoords=np.arange(24.0), probeGuess=raw.probe)
    if "dose" in change:
        config = validate({"N": 16, "dose": change["dose"],
                           "data": {"source": "file", "path": str(path)}})
        with pytest.raises(ValueError, match=message):
            MeasuredSpec(16, change["dose"], 0, config.data).make()
        return
    with pytest.raises(ValueError, match=message):
        load_measured(path, 16, settings)


def test_a_users_object_and_probe_files_and_a_tiny_dose_are_refused_at_validation(
        tmp_path: Path) -> None:
    """Tried as a new user would: each was refused only after simulation, the NaN object with
    a message naming its shape and not the NaN."""
    obj, probe = tmp_path / "obj.npz", tmp_path / "probe.npz"
    np.savez(obj, objectGuess=np.full((128, 128), np.nan, np.complex64))
    np.savez(probe, something=np.ones((16, 16), np.complex64))
    with pytest.raises(ConfigError, match=r"key 'objectGuess' must be finite: 16384 of its "
                                          r"16384 values are not \(16384 NaN, 0 infinite\)"):
        validate({"N": 16, "data": {"object": {"kind": "npz", "path": str(obj)}}})
    with pytest.raises(ConfigError, match=r"has no key 'probeGuess' or 'probe' \(it holds "
                                          r"\['something'\]\)"):
        validate({"N": 16, "data": {"probe": {"kind": "npz", "path": str(probe)}}})
    np.savez(probe, probeGuess=np.ones((32, 32), np.complex64))
    with pytest.raises(ConfigError, match=r"holds a probe of shape \(32, 32\), not \(16, 16\)"):
        validate({"N": 16, "data": {"probe": {"kind": "npz", "path": str(probe)}}})
    with pytest.raises(ConfigError, match=r"dose=0.001: must be >= 1 photon per pattern"):
        validate({"N": 16, "dose": 1e-3})


def test_flips_mirror_the_positions_and_a_pixel_size_replaces_the_geometry(
        tmp_path: Path) -> None:
    exported_scan(tmp_path / "scan.cxi", N=16, n_train=24)
    raw = read_cxi(tmp_path / "scan.cxi")
    write_cxi(tmp_path / "measured.cxi", replace(raw, truth=None))
    plain = load_measured(tmp_path / "measured.cxi", 16, MeasuredConfig())
    flipped = load_measured(tmp_path / "measured.cxi", 16, MeasuredConfig(flip_x=True))
    np.testing.assert_allclose(flipped.positions[:, 1], plain.positions[:, 1])
    np.testing.assert_allclose(flipped.positions[:, 0] - flipped.positions[:, 0].min(),
                               plain.positions[:, 0].max() - plain.positions[:, 0], atol=1e-9)
    pixel = plain.metadata["pixel_size_m"]
    given = load_measured(tmp_path / "measured.cxi", 16, MeasuredConfig(pixel_size=2 * pixel))
    np.testing.assert_allclose(np.ptp(given.positions, axis=0),
                               np.ptp(plain.positions, axis=0) / 2, atol=1e-9)
