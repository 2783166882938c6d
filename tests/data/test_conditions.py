"""An experiment's conditions in the data (docs/physics.md §12.1–§12.3): position errors seeded,
stored and given to the reconstructors as nominal; the probe guess; the detector; all in the
cache key and the NPZ file, and absent (keys and numbers unchanged) when ideal."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.config import (
    DetectorConfig,
    ObjectConfig,
    PositionErrorConfig,
    ProbeConfig,
    ProbeGuessConfig,
)
from ptycho.data import cache_key, load_npz, make_datasets, save_npz
from ptycho.data.probe import estimate_probe, focused_probe, guessed_probe_settings
from ptycho.data.scan import perturb_positions, position_error
from ptycho.evaluation import probe_error
from tests.helpers import simulation_spec

BASE = {"N": 16, "dose": 1e4, "n_train": 36, "seed": 2, "obj": ObjectConfig(size=40)}
OFF = PositionErrorConfig(sigma=0.5, scale=0.02, rotation=1.0, drift_x=0.8)


def _pair(**data: object):
    return make_datasets(simulation_spec(**{**BASE, **data}))


def test_position_errors_are_seeded_stored_and_the_scan_gets_the_nominal_ones() -> None:
    ideal, first, again = _pair(), _pair(position_error=OFF), _pair(position_error=OFF)
    np.testing.assert_array_equal(first.train.positions, again.train.positions)
    np.testing.assert_array_equal(first.train.nominal_positions, ideal.train.positions)
    np.testing.assert_array_equal(first.train.scan.positions, ideal.train.positions)
    assert not np.allclose(first.train.positions, ideal.train.positions)
    other = make_datasets(simulation_spec(**{**BASE, "seed": 3}, position_error=OFF))
    assert not np.allclose(other.train.positions - other.train.nominal_positions,
                           first.train.positions - first.train.nominal_positions)
    # the same nominal scan as the ideal experiment: the conditions are compared on one geometry
    assert ideal.train.nominal_positions is None


def test_perturbation_is_the_stated_transform() -> None:
    nominal = np.array([[20.0, 20.0], [30.0, 20.0], [20.0, 30.0], [30.0, 30.0]])
    rotated = perturb_positions(nominal, PositionErrorConfig(rotation=90.0 / 4, scale=0.0),
                                (64, 64), 16, seed=0)
    centre = nominal.mean(axis=0)
    assert np.allclose(np.hypot(*(rotated - centre).T), np.hypot(*(nominal - centre).T))
    scaled = perturb_positions(nominal, PositionErrorConfig(scale=0.1), (64, 64), 16, seed=0)
    np.testing.assert_allclose(scaled - centre, 1.1 * (nominal - centre))
    drift = perturb_positions(nominal, PositionErrorConfig(drift_y=3.0), (64, 64), 16, seed=0)
    np.testing.assert_allclose(drift[:, 1] - nominal[:, 1], [0.0, 1.0, 2.0, 3.0])
    shifted = nominal + np.array([0.3, -0.2])  # a common shift is a gauge
    assert position_error(shifted, nominal)["rms"] == pytest.approx(0.0, abs=1e-12)
    assert position_error(shifted, nominal)["shift"] == pytest.approx(np.hypot(0.3, 0.2))


def test_probe_guesses(tmp_path) -> None:
    focused = ProbeConfig(kind="focused", aperture_radius=4.0, defocus=2.0, astigmatism_x=1.5)
    guess = guessed_probe_settings(ProbeGuessConfig(kind="perturbed", defocus_error=1.0), focused)
    assert guess.defocus == 3.0 and guess.astigmatism_x == 0.0
    kept = guessed_probe_settings(ProbeGuessConfig(kind="perturbed", keep_aberrations=True),
                                  focused)
    assert kept.astigmatism_x == 1.5
    with pytest.raises(ValueError, match="estimate"):
        np.savez(tmp_path / "probe.npz", probeGuess=focused_probe(16, focused))
        guessed_probe_settings(ProbeGuessConfig(kind="perturbed"),
                               ProbeConfig(kind="npz", path=str(tmp_path / "probe.npz")))
    pair = _pair(probe=focused, probe_guess=ProbeGuessConfig(kind="perturbed"))
    counts = pair.train.counts
    np.testing.assert_array_equal(counts, _pair(probe=focused).train.counts)  # data unchanged
    assert pair.train.scan.probe is pair.train.probe_start
    assert 0.05 < probe_error(pair.train.probe_start, pair.train.probe) < 1.0
    # From an empty beam's patterns the estimate is the in-focus probe of the pupil.
    in_focus = focused_probe(16, ProbeConfig(kind="focused", aperture_radius=4.0, defocus=0.0))
    far = np.abs(np.fft.fftshift(np.fft.fft2(in_focus))) ** 2
    assert probe_error(estimate_probe(np.stack([far, far])), in_focus) < 1e-6


def test_detector_in_the_data_and_its_scan() -> None:
    detector = DetectorConfig(beamstop_radius=2.0, background=0.5)
    ideal, pair = _pair(), _pair(detector=detector)
    mask = pair.train.detector.mask
    assert mask is not None and not mask[8, 8]
    assert np.all(pair.train.counts[:, ~mask] == 0)
    assert pair.train.scan.detector is pair.train.detector
    # the signal's dose is estimated from the counts: the background and the mask undone
    assert pair.train.scan.signal_dose == pytest.approx(ideal.train.measured_dose, rel=0.25)
    assert ideal.train.scan.signal_dose == ideal.train.measured_dose


def test_conditions_enter_the_cache_key_only_when_not_ideal() -> None:
    ideal = simulation_spec(**BASE)
    explicit = simulation_spec(**BASE, detector=DetectorConfig(), position_error=
                               PositionErrorConfig(), probe_guess=ProbeGuessConfig())
    assert cache_key(ideal) == cache_key(explicit)
    keys = {cache_key(simulation_spec(**BASE, **condition)) for condition in (
        {"detector": DetectorConfig(background=1.0)}, {"position_error": OFF},
        {"probe_guess": ProbeGuessConfig(kind="perturbed")})}
    assert len(keys) == 3 and cache_key(ideal) not in keys


def test_npz_round_trip_keeps_the_conditions(tmp_path) -> None:
    pair = _pair(position_error=OFF, detector=DetectorConfig(beamstop_radius=2.0, background=0.5),
                 probe_guess=ProbeGuessConfig(kind="estimate"))
    loaded = load_npz(save_npz(tmp_path / "scan.npz", pair.train))
    for name in ("counts", "positions", "nominal_positions", "probe", "probe_start"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(pair.train, name), name)
    np.testing.assert_array_equal(loaded.detector.mask, pair.train.detector.mask)
    assert loaded.detector.background == 0.5
    plain = load_npz(save_npz(tmp_path / "plain.npz", _pair().train))
    assert plain.nominal_positions is None and plain.probe_start is None
    assert plain.detector.ideal
