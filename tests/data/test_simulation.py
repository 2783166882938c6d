"""Simulated datasets: seeded, independent train/test, validated arguments."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.config import ObjectConfig, ProbeConfig, ScanConfig
from ptycho.data import (
    DiffractionData,
    SimulationSpec,
    disc_probe,
    make_datasets,
    make_object,
    simulate,
)
from tests.helpers import simulation_spec


def _spec(**overrides: object) -> SimulationSpec:
    fields = {"N": 16, "dose": 1e4, "n_train": 24, "seed": 3,
              "obj": ObjectConfig(size=40)}
    fields.update(overrides)
    return simulation_spec(**fields)  # type: ignore[arg-type]


def _assert_identical(a: DiffractionData, b: DiffractionData) -> None:
    for name in ("counts", "positions", "probe", "obj", "patches"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.measured_dose == b.measured_dose


def test_same_seed_gives_a_bit_identical_dataset() -> None:
    first, again = make_datasets(_spec()), make_datasets(_spec())
    _assert_identical(first.train, again.train)
    _assert_identical(first.test, again.test)


def test_noise_seed_changes_only_the_noise() -> None:
    base = make_datasets(_spec())
    other = make_datasets(_spec(noise_seed=99))
    np.testing.assert_array_equal(base.train.positions, other.train.positions)
    np.testing.assert_array_equal(base.train.obj, other.train.obj)
    np.testing.assert_array_equal(base.train.patches, other.train.patches)
    assert np.any(base.train.counts != other.train.counts)
    assert np.any(base.test.counts != other.test.counts)


def test_seed_changes_positions_and_object() -> None:
    base, other = make_datasets(_spec()), make_datasets(_spec(seed=4))
    assert not np.allclose(base.train.positions, other.train.positions)
    assert not np.allclose(base.train.obj, other.train.obj)


def test_reconstruct_scores_the_measured_scan_itself() -> None:
    pair = make_datasets(_spec())
    assert pair.reconstructs and pair.test is pair.train


def test_generalize_scans_an_independent_object_with_the_training_geometry() -> None:
    """The reference hard-coded a seed in its simulator: train and test shared x-coordinates.
    Here the test scan has its own object, jitter and noise, and the training scan's geometry:
    as many positions on the same raster (a sparser test scan made test groups twice as wide)."""
    pair = make_datasets(_spec(design="generalize", n_train=100))
    train, test = pair.train, pair.test
    assert not pair.reconstructs and len(test) == len(train)
    assert not np.allclose(train.obj, test.obj)
    assert not np.allclose(train.positions, test.positions)  # own jitter (edges clip alike)
    assert np.abs(train.positions - test.positions).max() <= 2.0 + 1e-9  # one raster, ±1 jitter
    assert test.metadata["split"] == "test"
    random = make_datasets(_spec(design="generalize", scan=ScanConfig(kind="random")))
    assert not np.intersect1d(random.train.positions[:, 1], random.test.positions[:, 1]).size


def test_dataset_fields_have_documented_shapes_and_dtypes() -> None:
    pair = make_datasets(_spec(scan=ScanConfig(kind="raster", jitter=0.5)))
    train = pair.train
    assert train.counts.shape == (24, 16, 16) and train.counts.dtype == np.float32
    assert train.positions.shape == (24, 2) and train.positions.dtype == np.float64
    assert train.probe.shape == (16, 16) and train.probe.dtype == np.complex64
    assert train.patches.shape == (24, 16, 16) and train.patches.dtype == np.complex64
    assert train.obj.shape == (40, 40) and train.obj.dtype == np.complex64
    assert train.dose == 1e4
    assert abs(train.measured_dose - 1e4) < 3 * np.sqrt(1e4 / 24) + 1e-9
    assert train.metadata["split"] == "train"


@pytest.mark.parametrize("kind", ["lines", "grf"])
@pytest.mark.parametrize("phase", ["none", "structure", "independent"])
def test_objects_are_seeded_and_bounded(kind: str, phase: str) -> None:
    spec = ObjectConfig(kind=kind, size=32, phase=phase)
    obj = make_object(spec, seed=1)
    np.testing.assert_array_equal(obj, make_object(spec, seed=1))
    assert not np.array_equal(obj, make_object(spec, seed=2))
    amplitude = np.abs(obj)
    assert amplitude.min() >= spec.amplitude_min - 1e-6
    assert amplitude.max() <= spec.amplitude_max + 1e-6
    assert amplitude.std() > 0.01
    phase_values = np.angle(obj)
    if phase == "none":
        assert np.all(phase_values == 0)
    else:
        assert phase_values.std() > 0.01


def test_disc_probe_is_centred_soft_and_peak_normalised() -> None:
    probe = disc_probe(64, ProbeConfig(radius_fraction=0.17, phase_curvature=1.0))
    amplitude = np.abs(probe)
    assert amplitude.max() == pytest.approx(1.0)
    assert amplitude[32, 32] == pytest.approx(1.0, abs=1e-3)
    assert amplitude[0, 0] < 1e-6
    assert 0.0 < amplitude[32, 32 + 11] < 1.0  # soft edge at r ≈ 0.17·64
    assert np.angle(probe[32, 32 + 5]) == pytest.approx((5 / 10.88) ** 2, rel=1e-3)


@pytest.mark.parametrize(
    ("overrides", "name", "value"),
    [
        ({"N": 48}, "N", "48"),
        ({"N": 8}, "N", "8"),
        ({"N": 32.0}, "N", "32.0"),
        ({"dose": 0}, "dose", "0"),
        ({"dose": -1.0}, "dose", "-1.0"),
        ({"dose": float("nan")}, "dose", "nan"),
        ({"dose": float("inf")}, "dose", "inf"),
        ({"dose": "abc"}, "dose", "'abc'"),
        ({"n_train": 0}, "n_train", "0"),
        ({"obj": ObjectConfig(size=16)}, "object.size", "16"),
        ({"design": "other"}, "design", "'other'"),
    ],
)
def test_invalid_spec_is_refused_naming_argument_and_value(
    overrides: dict, name: str, value: str
) -> None:
    """Refused by the spec, or (the dose: checked once, where it enters the data) by the
    simulation it asks for, before any pattern is drawn."""
    with pytest.raises(ValueError) as raised:
        make_datasets(_spec(**overrides))
    assert name in str(raised.value) and value in str(raised.value)


@pytest.mark.parametrize(
    ("factory", "name", "value"),
    [
        (lambda: ObjectConfig(kind="circles"), "kind", "'circles'"),
        (lambda: ObjectConfig(kind="npz", path="/no/such.npz"), "path", "'/no/such.npz'"),
        (lambda: ProbeConfig(radius_fraction=0.0), "radius_fraction", "0.0"),
        (lambda: ScanConfig(kind="spiral"), "kind", "'spiral'"),
    ],
)
def test_invalid_component_specs_are_refused(factory, name: str, value: str) -> None:
    with pytest.raises(ValueError) as raised:
        factory()
    assert name in str(raised.value) and value in str(raised.value)


def test_simulate_refuses_an_object_smaller_than_a_patch() -> None:
    with pytest.raises(ValueError, match=r"obj of shape \(12, 40\) is smaller than a patch"):
        simulate(np.ones((12, 40), np.complex64), disc_probe(16), np.array([[8.0, 6.0]]),
                 dose=1e3, seed=0)


def test_simulate_refuses_positions_outside_the_object() -> None:
    with pytest.raises(ValueError, match=r"positions: 1 patch centres fall outside"):
        simulate(np.ones((40, 40), np.complex64), disc_probe(16),
                 np.array([[20.0, 20.0], [35.0, 20.0]]), dose=1e3, seed=0)


def test_simulate_refuses_a_bad_dose() -> None:
    with pytest.raises(ValueError, match=r"dose .* got -5"):
        simulate(np.ones((40, 40), np.complex64), disc_probe(16), np.array([[20.0, 20.0]]),
                 dose=-5, seed=0)


def test_objects_and_probes_can_come_from_npz_files(tmp_path) -> None:
    from ptycho.data import make_probe

    obj = make_object(ObjectConfig(size=40), seed=9)
    probe = 2.0 * disc_probe(16, ProbeConfig(phase_curvature=1.0))
    np.savez(tmp_path / "sample.npz", objectGuess=obj, probeGuess=probe)
    spec = _spec(obj=ObjectConfig(kind="npz", path=str(tmp_path / "sample.npz")),
                 probe=ProbeConfig(kind="npz", path=str(tmp_path / "sample.npz")))
    pair = make_datasets(spec)
    np.testing.assert_array_equal(pair.train.obj, obj)
    np.testing.assert_allclose(pair.train.probe, probe / 2.0, rtol=1e-6)  # peak normalised
    np.savez(tmp_path / "wrong.npz", something=obj)
    with pytest.raises(ValueError, match="has no key 'objectGuess' or 'object'"):
        make_object(ObjectConfig(kind="npz", path=str(tmp_path / "wrong.npz")), seed=0)
    with pytest.raises(ValueError, match=r"has shape \(16, 16\), expected \(32, 32\)"):
        make_probe(ProbeConfig(kind="npz", path=str(tmp_path / "sample.npz")), 32)
