"""NPZ I/O: PtychoPINN-compatible keys, round trip, refusal naming the bad key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ptycho.config import ObjectConfig
from ptycho.data import load_npz, make_datasets, save_npz
from ptycho.data.arrays import is_npz_file, read_npz_array
from tests.helpers import simulation_spec


@pytest.fixture(scope="module")
def dataset():
    return make_datasets(simulation_spec(N=16, dose=1e3, n_train=12,
                                        obj=ObjectConfig(size=40))).train


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


def _not_npz_files(dataset, folder: Path) -> dict[str, Path]:
    """Files named ``*.npz`` that are not NPZ archives."""
    text = folder / "text.npz"
    text.write_text("xcoords,ycoords\n1,2\n")
    npy = folder / "single_array.npz"
    with npy.open("wb") as handle:  # a bare .npy (a file handle: np.save adds no suffix)
        np.save(handle, dataset.counts)
    truncated = folder / "truncated.npz"
    whole = save_npz(folder / "whole.npz", dataset).read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    return {"text": text, "npy": npy, "truncated": truncated}


@pytest.mark.parametrize("kind", ["text", "npy", "truncated"])
def test_a_file_that_is_not_an_npz_is_refused_naming_it(dataset, tmp_path: Path,
                                                        kind: str) -> None:
    """Regression: a text file named ``x.npz`` was refused with numpy's "pickled (object) data"
    message (and a bare .npy with a TypeError)."""
    path = _not_npz_files(dataset, tmp_path)[kind]
    message = re.escape(f"{path}: not a valid NPZ file (not a zip archive)")
    with pytest.raises(ValueError, match=message):
        load_npz(path)
    with pytest.raises(ValueError, match=message):
        read_npz_array(path, ("probeGuess", "probe"), "probe")


def test_is_npz_file_tells_zip_archives_from_the_rest(dataset, tmp_path: Path) -> None:
    assert is_npz_file(save_npz(tmp_path / "good.npz", dataset))
    assert is_npz_file(str(tmp_path / "good.npz"))
    for path in _not_npz_files(dataset, tmp_path).values():
        assert not is_npz_file(path), path
    assert not is_npz_file(tmp_path / "missing.npz")
    assert not is_npz_file(tmp_path)  # a folder


def test_read_npz_array_reads_the_first_key_present(dataset, tmp_path: Path) -> None:
    path = save_npz(tmp_path / "data.npz", dataset)
    probe, key = read_npz_array(path, ("probe", "probeGuess"), "probe")
    assert key == "probeGuess"
    np.testing.assert_array_equal(probe, dataset.probe)
    with pytest.raises(ValueError, match=r"probe file .* has no key 'probe' or 'P'"):
        read_npz_array(path, ("probe", "P"), "probe")
