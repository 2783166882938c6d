"""CXI I/O: round trip, CXI's soft links and alternative locations, refusal naming the field."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptycho.data.cxi import (
    CxiTruth,
    RawScan,
    energy_to_wavelength,
    read_cxi,
    wavelength_to_energy,
    write_cxi,
)

M, H, W = 5, 16, 16
DETECTOR_DATA = "entry_1/instrument_1/detector_1/data"
DATA_LINK = "entry_1/data_1/data"
TRANSLATION = "entry_1/sample_1/geometry_1/translation"
TRANSLATION_LINK = "entry_1/data_1/translation"
ENERGY = "entry_1/instrument_1/source_1/energy"
DISTANCE = "entry_1/instrument_1/detector_1/distance"
X_PIXEL = "entry_1/instrument_1/detector_1/x_pixel_size"
PROBE = "entry_1/instrument_1/source_1/probe"
MASK = "entry_1/instrument_1/detector_1/mask"
TRUTH = "entry_1/sample_1/ptycho_truth"


def _complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


def _full_scan() -> RawScan:
    rng = np.random.default_rng(0)
    mask = np.ones((H, W), dtype=bool)
    mask[0, :3] = False
    truth = CxiTruth(obj=_complex(rng, (40, 48)), probe=_complex(rng, (H, W)),
                     positions=rng.uniform(10, 30, size=(M, 2)), origin=(20.5, 24.0),
                     pixel_size=3.2e-8)
    return RawScan(counts=rng.poisson(50.0, size=(M, H, W)).astype(np.float32),
                   translation=rng.uniform(-1e-6, 1e-6, size=(M, 2)), wavelength=1.55e-10,
                   distance=2.5, detector_pixel=(75e-6, 55e-6), probe=_complex(rng, (H, W)),
                   mask=mask, truth=truth)


def _minimal_scan() -> RawScan:
    counts = np.arange(M * H * W, dtype=np.float32).reshape(M, H, W) % 7
    return RawScan(counts=counts, translation=np.linspace(0, 1e-6, 2 * M).reshape(M, 2),
                   wavelength=None, distance=None, detector_pixel=None)


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    scan = _full_scan()
    path = write_cxi(tmp_path / "scan.cxi", scan)
    with h5py.File(path, "r") as file:
        assert int(file["cxi_version"][()]) == 160
        assert file[DETECTOR_DATA].dtype == np.uint32
        assert file[TRANSLATION].shape == (M, 3)
        np.testing.assert_array_equal(file[TRANSLATION][:, 2], 0.0)
        assert file[ENERGY][()] == pytest.approx(wavelength_to_energy(1.55e-10), rel=1e-15)
        np.testing.assert_array_equal(file[MASK][()], (~scan.mask).astype(np.uint32))
    loaded = read_cxi(path)
    assert loaded.path == str(path)
    assert loaded.counts.dtype == np.float32
    np.testing.assert_array_equal(loaded.counts, scan.counts)
    assert loaded.translation.dtype == np.float64
    np.testing.assert_allclose(loaded.translation, scan.translation, rtol=0, atol=1e-15)
    assert loaded.wavelength == pytest.approx(scan.wavelength, rel=1e-12)
    assert loaded.distance == scan.distance
    assert loaded.detector_pixel == scan.detector_pixel
    assert loaded.probe.dtype == np.complex64
    np.testing.assert_array_equal(loaded.probe, scan.probe)
    assert loaded.mask.dtype == bool
    np.testing.assert_array_equal(loaded.mask, scan.mask)
    for name in ("obj", "probe", "positions"):
        np.testing.assert_array_equal(getattr(loaded.truth, name), getattr(scan.truth, name))
    assert loaded.truth.origin == scan.truth.origin
    assert loaded.truth.pixel_size == scan.truth.pixel_size


def test_a_scan_without_optional_parts_round_trips_with_none(tmp_path: Path) -> None:
    scan = _minimal_scan()
    loaded = read_cxi(write_cxi(tmp_path / "deep" / "folder" / "minimal.cxi", scan))
    np.testing.assert_array_equal(loaded.counts, scan.counts)
    np.testing.assert_array_equal(loaded.translation, scan.translation)
    for name in ("wavelength", "distance", "detector_pixel", "probe", "mask", "truth"):
        assert getattr(loaded, name) is None, name


def test_data_and_translation_in_data_1_are_soft_links(tmp_path: Path) -> None:
    path = write_cxi(tmp_path / "scan.cxi", _full_scan())
    with h5py.File(path, "r") as file:
        for link, target in ((DATA_LINK, DETECTOR_DATA), (TRANSLATION_LINK, TRANSLATION)):
            found = file.get(link, getlink=True)
            assert isinstance(found, h5py.SoftLink), link
            assert found.path == f"/{target}"
            np.testing.assert_array_equal(file[link][()], file[target][()])


def test_an_existing_file_is_replaced_leaving_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "scan.cxi"
    write_cxi(path, _full_scan())
    write_cxi(path, _minimal_scan())
    assert read_cxi(path).truth is None
    assert [p.name for p in tmp_path.iterdir()] == ["scan.cxi"]


def test_the_alternative_locations_are_read(tmp_path: Path) -> None:
    """Counts only in detector_1/data, translation (M, 2) only in data_1/translation, the probe
    in detector_1/probe (real, cast), a mask of CXI's bits; counts within 1e-3 of integers."""
    scan = _minimal_scan()
    path = tmp_path / "other_writer.cxi"
    probe = np.linspace(0, 1, H * W).reshape(H, W)
    mask = np.zeros((H, W), dtype=np.int32)
    mask[2, 3] = 0x20  # any non-zero bit: a bad pixel
    with h5py.File(path, "w") as file:
        file.create_dataset(DETECTOR_DATA, data=scan.counts.astype(np.float64) + 4e-4)
        file.create_dataset(TRANSLATION_LINK, data=scan.translation)
        file.create_dataset("entry_1/instrument_1/detector_1/probe", data=probe)
        file.create_dataset(MASK, data=mask)
        file.create_dataset(ENERGY, data=[wavelength_to_energy(1e-10)])  # shape (1,)
    loaded = read_cxi(path)
    np.testing.assert_array_equal(loaded.counts, scan.counts)
    np.testing.assert_array_equal(loaded.translation, scan.translation)
    assert loaded.probe.dtype == np.complex64
    np.testing.assert_array_equal(loaded.probe, probe.astype(np.complex64))
    assert not loaded.mask[2, 3] and loaded.mask.sum() == H * W - 1
    assert loaded.wavelength == pytest.approx(1e-10, rel=1e-12)
    with h5py.File(path, "a") as file:
        file.create_dataset("entry_1/instrument_1/source_1/illumination", data=probe + 1j)
        del file["entry_1/instrument_1/detector_1/probe"]
    np.testing.assert_array_equal(read_cxi(path).probe, (probe + 1j).astype(np.complex64))


def test_energy_and_wavelength_convert_with_h_c() -> None:
    eight_kev = 8000 * 1.602176634e-19
    assert energy_to_wavelength(eight_kev) == pytest.approx(1.5498e-10, rel=1e-4)
    assert energy_to_wavelength(wavelength_to_energy(1.3e-10)) == pytest.approx(1.3e-10)


def _replace(location: str, data: object) -> Callable[[h5py.File], None]:
    def edit(file: h5py.File) -> None:
        del file[location]
        file.create_dataset(location, data=data)
    return edit


def _delete(*locations: str) -> Callable[[h5py.File], None]:
    def edit(file: h5py.File) -> None:
        for location in locations:
            del file[location]
    return edit


def _counts_with(value: float, where: tuple[int, int, int] = (0, 3, 4)) -> np.ndarray:
    counts = _full_scan().counts.astype(np.float64)
    counts[where] = value
    return counts


def _nan_counts() -> np.ndarray:
    counts = _counts_with(np.nan)
    counts[1, 0, 0] = np.nan
    counts[2, 0, 0] = np.inf
    return counts


REFUSALS: dict[str, tuple[Callable[[h5py.File], None] | None, str]] = {
    "not_hdf5": (None, "not an HDF5 (CXI) file ("),  # the file is replaced by text
    "missing_data": (_delete(DATA_LINK, DETECTOR_DATA),
                     f"no counts: neither '{DATA_LINK}' nor '{DETECTOR_DATA}' is in the file"),
    "2d_data": (_replace(DETECTOR_DATA, np.ones((H, W))),
                f"counts '{DATA_LINK}' must be 3-D (M, H, W) with M, H, W >= 1, "
                "got shape (16, 16)"),
    "negative_counts": (_replace(DETECTOR_DATA, _counts_with(-3.0)),
                        f"counts '{DATA_LINK}' has 1 negative counts (min -3)"),
    "non_integer_counts": (_replace(DETECTOR_DATA, _counts_with(0.37)),
                           f"counts '{DATA_LINK}' are not integer photon counts (e.g. 0.37 at "
                           "frame 0, pixel (3, 4)): thinning and the Poisson likelihood need "
                           "photon counts"),
    "nan_counts": (_replace(DETECTOR_DATA, _nan_counts()),
                   f"counts '{DATA_LINK}' has 2 NaN and 1 inf values; counts must be finite"),
    "missing_translation": (_delete(TRANSLATION_LINK, TRANSLATION),
                            f"no translation: neither '{TRANSLATION}' nor '{TRANSLATION_LINK}' "
                            "is in the file"),
    "translation_count": (_replace(TRANSLATION, np.zeros((M - 1, 3))),
                          f"translation '{TRANSLATION}' must have shape (5, 2) or (5, 3) to "
                          "match the 5 frames of the counts, got shape (4, 3)"),
    "nan_translation": (_replace(TRANSLATION, np.full((M, 3), np.nan)),
                        f"translation '{TRANSLATION}' has 15 non-finite (NaN or inf) values"),
    "energy_in_ev": (_replace(ENERGY, 8000.0),
                     f"energy '{ENERGY}' is 8000, which looks like eV: CXI stores the photon "
                     "energy in joules"),
    "zero_distance": (_replace(DISTANCE, 0.0),
                      f"distance '{DISTANCE}' must be positive and finite, got 0.0"),
    "negative_pixel": (_replace(X_PIXEL, -75e-6),
                       f"pixel size '{X_PIXEL}' must be positive and finite, got -7.5e-05"),
    "probe_shape": (_replace(PROBE, np.ones((8, 8), dtype=np.complex64)),
                    f"probe '{PROBE}' must have the counts' frame shape (H, W) = (16, 16), "
                    "got shape (8, 8)"),
    "probe_nan": (_replace(PROBE, np.full((H, W), np.nan, dtype=np.complex64)),
                  f"probe '{PROBE}' has 256 non-finite (NaN or inf) values"),
    "mask_shape": (_replace(MASK, np.zeros((H, W + 1), dtype=np.uint32)),
                   f"mask '{MASK}' must have the counts' frame shape (H, W) = (16, 16), "
                   "got shape (16, 17)"),
    "truth_without_object": (_delete(f"{TRUTH}/object"),
                             f"truth group '{TRUTH}' has no dataset 'object' (needs datasets "
                             "object, probe, positions and attributes origin, pixel_size)"),
    "truth_positions": (_replace(f"{TRUTH}/positions", np.zeros((M, 3))),
                        f"truth '{TRUTH}/positions' must have shape (5, 2) to match the 5 "
                        "frames of the counts, got shape (5, 3)"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_malformed_file_is_refused_naming_the_field(tmp_path: Path, case: str) -> None:
    edit, expected = REFUSALS[case]
    path = write_cxi(tmp_path / f"{case}.cxi", _full_scan())
    if edit is None:
        path.write_text("counts,translation\n1,2\n")
    else:
        with h5py.File(path, "a") as file:
            edit(file)
    with pytest.raises(ValueError) as refused:
        read_cxi(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "missing.cxi"
    with pytest.raises(ValueError, match="not an HDF5 \\(CXI\\) file \\(no such file\\)"):
        read_cxi(path)


WRITE_REFUSALS = {
    "counts.negative": ({"counts": np.full((M, H, W), -1.0)},
                        "RawScan.counts has 1280 negative counts (min -1)"),
    "counts.non_integer": ({"counts": np.full((M, H, W), 0.5)},
                           "RawScan.counts are not integer photon counts (e.g. 0.5 at frame 0, "
                           "pixel (0, 0))"),
    "counts.2d": ({"counts": np.ones((H, W))}, "RawScan.counts must be 3-D (M, H, W)"),
    "translation.shape": ({"translation": np.zeros((M, 3))},
                          "RawScan.translation must have shape (5, 2) to match the 5 frames of "
                          "the counts, got shape (5, 3)"),
    "wavelength": ({"wavelength": -1.0}, "RawScan.wavelength must be positive and finite, "
                                         "got -1.0"),
    "probe.shape": ({"probe": np.ones((H, H + 2), dtype=np.complex64)},
                    "RawScan.probe must have the counts' frame shape (H, W) = (16, 16), "
                    "got shape (16, 18)"),
    "mask.dtype": ({"mask": np.zeros((H, W), dtype=np.uint32)},
                   "RawScan.mask must be bool (True where measured), got dtype uint32"),
}


@pytest.mark.parametrize("case", sorted(WRITE_REFUSALS))
def test_writing_a_malformed_scan_is_refused_naming_the_field(tmp_path: Path, case: str) -> None:
    fields, expected = WRITE_REFUSALS[case]
    scan = replace(_full_scan(), **fields)
    path = tmp_path / "out" / "scan.cxi"
    with pytest.raises(ValueError) as refused:
        write_cxi(path, scan)
    assert str(refused.value).startswith(f"{path}: {expected}"), str(refused.value)
    assert not path.parent.exists()
