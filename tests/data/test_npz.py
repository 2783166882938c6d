"""NPZ I/O: PtychoPINN-compatible keys, round trip, refusal naming the bad key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ptycho.data import ObjectSpec, SimulationSpec, load_npz, make_datasets, save_npz


@pytest.fixture(scope="module")
def dataset():
    return make_datasets(SimulationSpec(N=16, dose=1e3, n_train=12, n_test=4,
                                        obj=ObjectSpec(size=40))).train


def test_round_trip_keeps_every_array_and_the_dose(dataset, tmp_path: Path) -> None:
    path = save_npz(tmp_path / "data.npz", dataset)
    with np.load(path, allow_pickle=False) as npz:
        assert npz["diffraction"].dtype == np.float32
        assert npz["diffraction"].shape == (12, 16, 16)
        np.testing.assert_allclose(npz["diffraction"] ** 2, dataset.counts, rtol=1e-5)
        assert npz["xcoords"].dtype == np.float64 and npz["xcoords"].shape == (12,)
        assert npz["probeGuess"].dtype == np.complex64
        assert npz["objectGuess"].dtype == np.complex64
        assert json.loads(str(npz["_metadata"]))["dose"] == 1e3
    loaded = load_npz(path)
    for name in ("counts", "positions", "probe", "obj", "patches"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(dataset, name), err_msg=name)
    assert loaded.dose == dataset.dose
    assert loaded.measured_dose == pytest.approx(dataset.measured_dose)
    assert loaded.metadata["split"] == "train"


def _write_without(path: Path, dataset, drop: str, **replace: np.ndarray) -> Path:
    save_npz(path, dataset)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != drop}
    arrays.update(replace)
    np.savez(path, **arrays)
    return path


def test_a_file_missing_xcoords_is_refused_naming_it(dataset, tmp_path: Path) -> None:
    path = _write_without(tmp_path / "bad.npz", dataset, "xcoords")
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['xcoords'\]"):
        load_npz(path)


def test_wrong_dtype_or_shape_is_refused_naming_the_key(dataset, tmp_path: Path) -> None:
    path = _write_without(tmp_path / "bad.npz", dataset, "", probeGuess=np.ones((16, 16)))
    with pytest.raises(ValueError, match="'probeGuess' must be a 2-D complex array"):
        load_npz(path)
    path = _write_without(tmp_path / "bad2.npz", dataset, "", ycoords=np.ones(5))
    with pytest.raises(ValueError, match=r"'ycoords' must have shape \(12,\)"):
        load_npz(path)


def test_a_minimal_ptychopinn_file_loads(dataset, tmp_path: Path) -> None:
    """Only the required keys: counts come from diffraction², patches from objectGuess."""
    path = tmp_path / "minimal.npz"
    np.savez(
        path,
        diffraction=np.sqrt(dataset.counts),
        xcoords=dataset.positions[:, 0],
        ycoords=dataset.positions[:, 1],
        probeGuess=dataset.probe,
        objectGuess=dataset.obj,
    )
    loaded = load_npz(path)
    np.testing.assert_allclose(loaded.counts, dataset.counts, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(loaded.patches, dataset.patches, atol=1e-6)
    assert loaded.dose == pytest.approx(dataset.measured_dose, rel=1e-5)


def test_pickled_object_arrays_are_never_loaded(dataset, tmp_path: Path) -> None:
    path = _write_without(tmp_path / "pickle.npz", dataset, "",
                          _metadata=np.array([{"dose": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_npz(path)
