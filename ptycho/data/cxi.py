"""Ptychography scans in CXI 1.6 (HDF5), read and written with h5py, every field validated.

A field is read from the first location present and written to the first listed; the other
locations are CXI's soft links (written) or the alternatives other writers use (read).

=============================================  =========  =========  ==============================
HDF5 path (under ``entry_1/``)                 shape      dtype      meaning
=============================================  =========  =========  ==============================
``/cxi_version`` (root; ignored on read)       ()         int        160
``instrument_1/detector_1/data``               (M, H, W)  uint32     photon counts, beam centre
``data_1/data`` (soft link; read first)                              (DC) at (H//2, W//2)
``sample_1/geometry_1/translation``            (M, 3)     float64    sample (x, y, z), metres;
``data_1/translation`` (soft link)             or (M, 2)             z is dropped on read
``instrument_1/source_1/energy`` optional      ()         float64    photon energy, JOULES
``instrument_1/detector_1/distance`` optional  ()         float64    sample–detector, metres
``instrument_1/detector_1/x_pixel_size``,      ()         float64    detector pixel, metres
``y_pixel_size`` optional
``instrument_1/source_1/probe`` optional;      (H, W)     complex64  probe guess at the sample
also read: ``detector_1/probe``,                                     (a real array is cast)
``source_1/illumination``
``instrument_1/detector_1/mask`` optional      (H, W)     uint32     0 = good pixel, non-zero =
                                                                     bad (written as 1)
``sample_1/ptycho_truth/`` optional (ours)     group                 a simulation's truth:
  ``object``                                   (h, w)     complex64  object
  ``probe``                                    (H, W)     complex64  true probe
  ``positions``                                (M, 2)     float64    (x, y) centres, obj pixels
  attribute ``origin``                         (2,)       float64    (x, y) of translation (0, 0)
  attribute ``pixel_size``                     ()         float64    metres per object pixel
=============================================  =========  =========  ==============================

The energy becomes a wavelength, λ = h·c/E. Geometry may be absent (the :class:`RawScan` field
is then ``None``) but when present must be positive and finite; an energy above 1e-10 J is
refused as one written in eV. Counts must be finite, non-negative integers (within 1e-3; the
rounded values are returned, as float32).

Every refusal is a ``ValueError`` whose message starts with the file's path and names the HDF5
path (or, when writing, the :class:`RawScan` field) and the bad value or shape; a file that is
not a readable HDF5 file with ``"<path>: not an HDF5 (CXI) file (…)"``. :func:`write_cxi` writes
to a temporary file in the target's folder and renames it over the target.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
from scipy.constants import c as SPEED_OF_LIGHT
from scipy.constants import e as ELEMENTARY_CHARGE
from scipy.constants import h as PLANCK

__all__ = [
    "COUNTS_LOCATIONS", "CXI_VERSION", "DISTANCE_LOCATION", "ENERGY_LOCATION", "MASK_LOCATION",
    "MAX_ENERGY_J", "PIXEL_SIZE_LOCATIONS", "PROBE_LOCATIONS", "TRANSLATION_LOCATIONS",
    "TRUTH_LOCATION", "CxiTruth", "RawScan", "energy_to_wavelength", "read_cxi",
    "wavelength_to_energy", "write_cxi"
]

CXI_VERSION = 160
COUNTS_LOCATIONS = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data")
"""Where counts are read from, in order; written to the last, the first a soft link to it."""
TRANSLATION_LOCATIONS = ("entry_1/sample_1/geometry_1/translation", "entry_1/data_1/translation")
ENERGY_LOCATION = "entry_1/instrument_1/source_1/energy"
DISTANCE_LOCATION = "entry_1/instrument_1/detector_1/distance"
PIXEL_SIZE_LOCATIONS = ("entry_1/instrument_1/detector_1/x_pixel_size",
                        "entry_1/instrument_1/detector_1/y_pixel_size")
PROBE_LOCATIONS = ("entry_1/instrument_1/source_1/probe", "entry_1/instrument_1/detector_1/probe",
                   "entry_1/instrument_1/source_1/illumination")
MASK_LOCATION = "entry_1/instrument_1/detector_1/mask"
TRUTH_LOCATION = "entry_1/sample_1/ptycho_truth"
TRUTH_DATASETS = ("object", "probe", "positions")
TRUTH_ATTRIBUTES = ("origin", "pixel_size")
MAX_ENERGY_J = 1e-10
"""Above this a photon energy "in joules" is surely in eV (1e-10 J is 624 MeV)."""
INTEGER_TOLERANCE = 1e-3
"""How far from an integer a count may be and still be read as that integer."""
_UINT32_MAX = 2**32 - 1


@dataclass(frozen=True)
class CxiTruth:
    """The truth of a simulated scan, in our extra group (absent from measured files)."""

    obj: np.ndarray        # (h, w) complex64 object on the reconstruction grid
    probe: np.ndarray      # (H, W) complex64 the true probe (same sampling as RawScan.probe)
    positions: np.ndarray  # (M, 2) float64 (x, y) true patch centres, pixels of obj
    origin: tuple[float, float]  # (x, y) pixels of obj where translation (0, 0) falls
    pixel_size: float      # metres per object pixel


@dataclass(frozen=True, eq=False)
class RawScan:
    """A scan as a CXI file holds it, before it is fitted to a job's patch size."""

    counts: np.ndarray            # (M, H, W) float32 photons per pixel, integers >= 0,
                                  # beam centre (DC) at (H//2, W//2)
    translation: np.ndarray       # (M, 2) float64 (x, y) sample translation, metres (CXI's z
                                  # dropped)
    wavelength: float | None      # metres
    distance: float | None        # sample to detector, metres
    detector_pixel: tuple[float, float] | None   # (x, y) pixel sizes, metres
    probe: np.ndarray | None = None   # (H, W) complex64 probe guess at the sample plane
    mask: np.ndarray | None = None    # (H, W) bool, True where the detector measures
    truth: CxiTruth | None = None
    path: str = ""


def energy_to_wavelength(energy: float) -> float:
    """The wavelength (metres) of photons of ``energy`` joules: λ = h·c/E."""
    return PLANCK * SPEED_OF_LIGHT / float(energy)


def wavelength_to_energy(wavelength: float) -> float:
    """The photon energy (joules, CXI's unit) of ``wavelength`` metres: E = h·c/λ."""
    return PLANCK * SPEED_OF_LIGHT / float(wavelength)


# ---------------------------------------------------------------------------------------------
# Checks shared by reading and writing: ``label`` names the field (an HDF5 path or RawScan.x).


def _check_kind(path: Path, label: str, dtype: np.dtype, kinds: str, what: str) -> None:
    if np.dtype(dtype).kind not in kinds:
        raise ValueError(f"{path}: {label} must be {what}, got dtype {dtype}")


def _check_counts_shape(path: Path, label: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{path}: {label} must be 3-D (M, H, W) with M, H, W >= 1, "
                         f"got shape {tuple(shape)}")
    _check_kind(path, label, dtype, "biuf", "real photon counts")


def _check_counts_values(path: Path, label: str, counts: np.ndarray) -> np.ndarray:
    """Finite, non-negative, integer within :data:`INTEGER_TOLERANCE`: the rounded float32."""
    values = np.asarray(counts, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        n_nan = int(np.isnan(values).sum())
        raise ValueError(f"{path}: {label} has {n_nan} NaN and {int((~finite).sum()) - n_nan} "
                         "inf values; counts must be finite")
    negative = values < -INTEGER_TOLERANCE
    if negative.any():
        raise ValueError(f"{path}: {label} has {int(negative.sum())} negative counts "
                         f"(min {values.min():.6g}); counts must be >= 0")
    rounded = np.rint(values) + 0.0  # + 0.0: a -0.0 becomes 0.0
    off = np.abs(values - rounded) > INTEGER_TOLERANCE
    if off.any():
        frame, row, col = np.unravel_index(int(np.argmax(off)), values.shape)
        raise ValueError(
            f"{path}: {label} are not integer photon counts (e.g. {values[frame, row, col]:.6g} "
            f"at frame {frame}, pixel ({row}, {col})): thinning and the Poisson likelihood need "
            "photon counts")
    return rounded.astype(np.float32)


def _check_translation(path: Path, label: str, translation: object, n_frames: int,
                       widths: tuple[int, ...]) -> np.ndarray:
    """(M, 2) or (M, 3) (per ``widths``) finite metres: the (M, 2) float64 (x, y)."""
    array = np.asarray(translation)
    if array.ndim != 2 or array.shape[0] != n_frames or array.shape[1] not in widths:
        expected = " or ".join(f"({n_frames}, {width})" for width in widths)
        raise ValueError(f"{path}: {label} must have shape {expected} to match the {n_frames} "
                         f"frames of the counts, got shape {array.shape}")
    _check_kind(path, label, array.dtype, "iuf", "real (metres)")
    _check_finite(path, label, array)
    return np.ascontiguousarray(array[:, :2], dtype=np.float64)


def _check_finite(path: Path, label: str, array: np.ndarray) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{path}: {label} has {int(bad.sum())} non-finite (NaN or inf) values")


def _check_positive(path: Path, label: str, value: object) -> float:
    """A positive, finite number."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ValueError(f"{path}: {label} must be positive and finite, got {value!r}")
    return number


def _check_energy(path: Path, label: str, energy: object) -> float:
    """A photon energy in joules (positive, finite, not eV): the wavelength in metres."""
    joules = _check_positive(path, label, energy)
    if joules > MAX_ENERGY_J:
        raise ValueError(
            f"{path}: {label} is {joules:.6g}, which looks like eV: CXI stores the photon energy "
            f"in joules (at most {MAX_ENERGY_J:g} J; {joules:.6g} eV would be "
            f"{joules * ELEMENTARY_CHARGE:.6g} J)")
    return energy_to_wavelength(joules)


def _check_frame_shape(path: Path, label: str, shape: tuple[int, ...],
                       frame: tuple[int, int]) -> None:
    if tuple(shape) != frame:
        raise ValueError(f"{path}: {label} must have the counts' frame shape (H, W) = {frame}, "
                         f"got shape {tuple(shape)}")


def _check_complex(path: Path, label: str, array: object, ndim: int = 2) -> np.ndarray:
    """A finite real or complex ``ndim``-D array: complex64."""
    values = np.asarray(array)
    if values.ndim != ndim:
        raise ValueError(f"{path}: {label} must be {ndim}-D, got shape {values.shape}")
    _check_kind(path, label, values.dtype, "biufc", "a real or complex array")
    _check_finite(path, label, values)
    return values.astype(np.complex64)


def _check_truth(path: Path, labels: Sequence[str], fields: Sequence[object], n_frames: int,
                 frame: tuple[int, int]) -> CxiTruth:
    """``fields`` = (obj, probe, positions, origin, pixel_size), each named by ``labels``."""
    obj, probe, positions, origin, pixel_size = fields
    obj_label, probe_label, positions_label, origin_label, pixel_label = labels
    obj = _check_complex(path, obj_label, obj)
    _check_frame_shape(path, probe_label, np.shape(probe), frame)
    probe = _check_complex(path, probe_label, probe)
    positions = np.asarray(positions)
    if positions.shape != (n_frames, 2):
        raise ValueError(f"{path}: {positions_label} must have shape ({n_frames}, 2) to match "
                         f"the {n_frames} frames of the counts, got shape {positions.shape}")
    _check_kind(path, positions_label, positions.dtype, "iuf", "real (pixels)")
    _check_finite(path, positions_label, positions)
    origin = np.asarray(origin)
    if origin.shape != (2,) or origin.dtype.kind not in "iuf" or not np.isfinite(origin).all():
        raise ValueError(f"{path}: {origin_label} must be 2 finite numbers (x, y), "
                         f"got {origin!r}")
    return CxiTruth(obj=obj, probe=probe, positions=positions.astype(np.float64),
                    origin=(float(origin[0]), float(origin[1])),
                    pixel_size=_check_positive(path, pixel_label, pixel_size))


# ---------------------------------------------------------------------------------------------
# Reading


def _dataset(path: Path, file: h5py.File, location: str) -> h5py.Dataset | None:
    """The dataset at ``location`` (following soft links), or None when nothing is there."""
    if location not in file:
        return None
    found = file[location]
    if not isinstance(found, h5py.Dataset):
        raise ValueError(f"{path}: '{location}' must be a dataset, got a {type(found).__name__}")
    return found


def _first_dataset(path: Path, file: h5py.File, locations: Sequence[str],
                   what: str) -> tuple[str, h5py.Dataset]:
    for location in locations:
        dataset = _dataset(path, file, location)
        if dataset is not None:
            return location, dataset
    looked = " nor ".join(f"'{location}'" for location in locations)
    raise ValueError(f"{path}: no {what}: neither {looked} is in the file")


def _scalar(path: Path, file: h5py.File, location: str, what: str) -> object | None:
    """The one number at ``location`` (shape () or (1,)), or None when absent."""
    dataset = _dataset(path, file, location)
    if dataset is None:
        return None
    label = f"{what} '{location}'"
    if dataset.size != 1:
        raise ValueError(f"{path}: {label} must be one number, got shape {dataset.shape}")
    _check_kind(path, label, dataset.dtype, "iuf", "a real number")
    return np.asarray(dataset[()]).reshape(()).item()


def _read_geometry(path: Path, file: h5py.File
                   ) -> tuple[float | None, float | None, tuple[float, float] | None]:
    """(wavelength, distance, (x, y) detector pixel), metres, each None when absent."""
    energy = _scalar(path, file, ENERGY_LOCATION, "energy")
    wavelength = None if energy is None else _check_energy(
        path, f"energy '{ENERGY_LOCATION}'", energy)
    distance = _scalar(path, file, DISTANCE_LOCATION, "distance")
    if distance is not None:
        distance = _check_positive(path, f"distance '{DISTANCE_LOCATION}'", distance)
    sizes = [_scalar(path, file, location, "pixel size") for location in PIXEL_SIZE_LOCATIONS]
    if sizes == [None, None]:
        return wavelength, distance, None
    for location, size in zip(PIXEL_SIZE_LOCATIONS, sizes, strict=True):
        if size is None:
            other = next(loc for loc in PIXEL_SIZE_LOCATIONS if loc != location)
            raise ValueError(f"{path}: pixel size '{location}' is missing while '{other}' "
                             "is present; both are needed")
    x_size, y_size = (_check_positive(path, f"pixel size '{location}'", size)
                      for location, size in zip(PIXEL_SIZE_LOCATIONS, sizes, strict=True))
    return wavelength, distance, (x_size, y_size)


def _read_probe(path: Path, file: h5py.File, frame: tuple[int, int]) -> np.ndarray | None:
    for location in PROBE_LOCATIONS:
        dataset = _dataset(path, file, location)
        if dataset is not None:
            label = f"probe '{location}'"
            _check_frame_shape(path, label, dataset.shape, frame)
            return _check_complex(path, label, dataset[()])
    return None


def _read_mask(path: Path, file: h5py.File, frame: tuple[int, int]) -> np.ndarray | None:
    """True where the detector measures (CXI's mask == 0)."""
    dataset = _dataset(path, file, MASK_LOCATION)
    if dataset is None:
        return None
    label = f"mask '{MASK_LOCATION}'"
    _check_frame_shape(path, label, dataset.shape, frame)
    _check_kind(path, label, dataset.dtype, "biu", "integer (0 = good pixel)")
    return np.asarray(dataset[()]) == 0


def _read_truth(path: Path, file: h5py.File, n_frames: int,
                frame: tuple[int, int]) -> CxiTruth | None:
    if TRUTH_LOCATION not in file:
        return None
    group = file[TRUTH_LOCATION]
    if not isinstance(group, h5py.Group):
        raise ValueError(f"{path}: truth '{TRUTH_LOCATION}' must be a group, "
                         f"got a {type(group).__name__}")
    needs = (f"needs datasets {', '.join(TRUTH_DATASETS)} and attributes "
             f"{', '.join(TRUTH_ATTRIBUTES)}")
    for name in TRUTH_DATASETS:
        if not isinstance(group.get(name), h5py.Dataset):
            raise ValueError(f"{path}: truth group '{TRUTH_LOCATION}' has no dataset "
                             f"'{name}' ({needs})")
    for name in TRUTH_ATTRIBUTES:
        if name not in group.attrs:
            raise ValueError(f"{path}: truth group '{TRUTH_LOCATION}' has no attribute "
                             f"'{name}' ({needs})")
    if group["object"].ndim != 2:
        raise ValueError(f"{path}: truth '{TRUTH_LOCATION}/object' must be 2-D, "
                         f"got shape {group['object'].shape}")
    labels = [f"truth '{TRUTH_LOCATION}/{name}'" for name in TRUTH_DATASETS]
    labels += [f"truth attribute '{name}' of '{TRUTH_LOCATION}'" for name in TRUTH_ATTRIBUTES]
    pixel_size = np.asarray(group.attrs["pixel_size"])
    fields = [group[name][()] for name in TRUTH_DATASETS]
    fields += [group.attrs["origin"], pixel_size.item() if pixel_size.size == 1 else pixel_size]
    return _check_truth(path, labels, fields, n_frames, frame)


def _read_open(path: Path, file: h5py.File) -> RawScan:
    """The checks, cheap (shapes, small fields) before expensive (the counts' values)."""
    location, counts = _first_dataset(path, file, COUNTS_LOCATIONS, "counts")
    counts_label = f"counts '{location}'"
    _check_counts_shape(path, counts_label, counts.shape, counts.dtype)
    n_frames, height, width = counts.shape
    frame = (height, width)
    location, translation = _first_dataset(path, file, TRANSLATION_LOCATIONS, "translation")
    translation = _check_translation(path, f"translation '{location}'", translation[()],
                                     n_frames, (2, 3))
    wavelength, distance, pixel = _read_geometry(path, file)
    probe = _read_probe(path, file, frame)
    mask = _read_mask(path, file, frame)
    truth = _read_truth(path, file, n_frames, frame)
    return RawScan(counts=_check_counts_values(path, counts_label, counts[()]),
                   translation=translation, wavelength=wavelength, distance=distance,
                   detector_pixel=pixel, probe=probe, mask=mask, truth=truth, path=str(path))


def read_cxi(path: str | Path) -> RawScan:
    """Read the CXI file at ``path`` into a validated :class:`RawScan` (all in memory).

    Returns counts (M, H, W) float32 (non-negative integers), translation (M, 2) float64 metres,
    wavelength (m, from the energy in J), distance (m), detector pixel (x, y) (m), probe (H, W)
    complex64, mask (H, W) bool (True where measured) and the truth group, each optional part
    ``None`` when absent.

    Raises:
        ValueError: ``"<path>: not an HDF5 (CXI) file (…)"`` for a missing or non-HDF5 file;
            otherwise a message naming the HDF5 path of the bad field and its value or shape.
    """
    path = Path(path)
    if not path.is_file():
        why = "a folder" if path.is_dir() else "no such file"
        raise ValueError(f"{path}: not an HDF5 (CXI) file ({why})")
    try:
        with h5py.File(path, "r") as file:
            return _read_open(path, file)
    except OSError as error:  # not HDF5 (no signature), truncated or damaged
        raise ValueError(f"{path}: not an HDF5 (CXI) file ({error})") from None


# ---------------------------------------------------------------------------------------------
# Writing


def _validated(path: Path, scan: RawScan) -> RawScan:
    """``scan`` checked by the reader's rules, its arrays in the reader's dtypes."""
    counts = np.asarray(scan.counts)
    _check_counts_shape(path, "RawScan.counts", counts.shape, counts.dtype)
    n_frames, height, width = counts.shape
    frame = (height, width)
    translation = _check_translation(path, "RawScan.translation", scan.translation, n_frames,
                                     (2,))
    for name in ("wavelength", "distance"):
        if getattr(scan, name) is not None:
            _check_positive(path, f"RawScan.{name}", getattr(scan, name))
    pixel = scan.detector_pixel
    if pixel is not None:
        if np.shape(pixel) != (2,):
            raise ValueError(f"{path}: RawScan.detector_pixel must be (x, y) pixel sizes in "
                             f"metres, got {pixel!r}")
        pixel = tuple(_check_positive(path, f"RawScan.detector_pixel[{axis}]", size)
                      for axis, size in enumerate(pixel))
    probe = scan.probe
    if probe is not None:
        _check_frame_shape(path, "RawScan.probe", np.shape(probe), frame)
        probe = _check_complex(path, "RawScan.probe", probe)
    mask = scan.mask
    if mask is not None:
        mask = np.asarray(mask)
        _check_frame_shape(path, "RawScan.mask", mask.shape, frame)
        _check_kind(path, "RawScan.mask", mask.dtype, "b", "bool (True where measured)")
    truth = scan.truth
    if truth is not None:
        names = ("obj", "probe", "positions", "origin", "pixel_size")
        truth = _check_truth(path, [f"RawScan.truth.{name}" for name in names],
                             [getattr(truth, name) for name in names], n_frames, frame)
    return replace(scan, counts=_check_counts_values(path, "RawScan.counts", counts),
                   translation=translation, detector_pixel=pixel, probe=probe, mask=mask,
                   truth=truth)


def _write_number(file: h5py.File, location: str, value: float, units: str) -> None:
    file.create_dataset(location, data=np.float64(value))
    file[location].attrs["units"] = units


def _write_open(file: h5py.File, scan: RawScan) -> None:
    """Write a validated ``scan`` into the open, empty ``file``."""
    file.create_dataset("cxi_version", data=np.int64(CXI_VERSION))
    counts = scan.counts
    dtype = np.uint32 if counts.max() <= _UINT32_MAX else np.float64
    counts_location, data_link = COUNTS_LOCATIONS[1], COUNTS_LOCATIONS[0]
    file.create_dataset(counts_location, data=counts.astype(dtype))
    translation = np.zeros((len(scan.translation), 3), dtype=np.float64)
    translation[:, :2] = scan.translation
    file.create_dataset(TRANSLATION_LOCATIONS[0], data=translation)
    file[TRANSLATION_LOCATIONS[0]].attrs["units"] = "m"
    file.require_group(data_link.rsplit("/", 1)[0])
    file[data_link] = h5py.SoftLink(f"/{counts_location}")
    file[TRANSLATION_LOCATIONS[1]] = h5py.SoftLink(f"/{TRANSLATION_LOCATIONS[0]}")
    if scan.wavelength is not None:
        _write_number(file, ENERGY_LOCATION, wavelength_to_energy(scan.wavelength), "J")
    if scan.distance is not None:
        _write_number(file, DISTANCE_LOCATION, scan.distance, "m")
    if scan.detector_pixel is not None:
        for location, size in zip(PIXEL_SIZE_LOCATIONS, scan.detector_pixel, strict=True):
            _write_number(file, location, size, "m")
    if scan.probe is not None:
        file.create_dataset(PROBE_LOCATIONS[0], data=scan.probe.astype(np.complex64))
    if scan.mask is not None:
        file.create_dataset(MASK_LOCATION, data=(~scan.mask).astype(np.uint32))
    if scan.truth is not None:
        group = file.create_group(TRUTH_LOCATION)
        group.create_dataset("object", data=scan.truth.obj.astype(np.complex64))
        group.create_dataset("probe", data=scan.truth.probe.astype(np.complex64))
        group.create_dataset("positions", data=scan.truth.positions.astype(np.float64))
        group.attrs["origin"] = np.asarray(scan.truth.origin, dtype=np.float64)
        group.attrs["pixel_size"] = np.float64(scan.truth.pixel_size)


def write_cxi(path: str | Path, scan: RawScan) -> Path:
    """Write ``scan`` to ``path`` as CXI 1.6; returns the path.

    Counts (M, H, W) go to ``entry_1/instrument_1/detector_1/data`` as uint32 (float64 past
    2³²−1), translation (M, 2) metres as (M, 3) with z = 0, the wavelength (m) as the photon
    energy in joules, the mask (H, W) bool as CXI's uint32 (1 = bad pixel), the probe (H, W) and
    the truth as complex64; ``entry_1/data_1/{data,translation}`` are soft links. Parent folders
    are created; an existing file is replaced atomically (a temporary file in the same folder,
    then ``os.replace``).

    Raises:
        ValueError: naming the :class:`RawScan` field (``"<path>: RawScan.counts …"``) when it
            breaks the reader's rules (shapes; finite, non-negative, integer counts; positive
            geometry); nothing is written then.
    """
    path = Path(path)
    scan = _validated(path, scan)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with h5py.File(temporary, "x") as file:
            _write_open(file, scan)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
