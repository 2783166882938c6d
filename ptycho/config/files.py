"""The files a config names, checked when it is validated (before any work): a user's object
and probe NPZ, and a measured scan's file (its pattern count and content hash).

Light on purpose (numpy, zipfile, hashlib; h5py only for a CXI file): a bad file is refused by
validation, which loads no framework. The data layer reads the same arrays through these
functions, so a file is refused with the same words wherever it is read.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["CXI_DATA_PATHS", "OBJECT_KEYS", "PROBE_KEYS", "finite_array", "measured_file_summary",
           "npz_array", "object_array", "probe_array", "sha256"]

OBJECT_KEYS = ("objectGuess", "object")
PROBE_KEYS = ("probeGuess", "probe")
CXI_DATA_PATHS = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data")
"""Where a CXI file's diffraction counts are looked for, in order."""


def npz_array(path: str | Path, keys: tuple[str, ...], what: str) -> tuple[np.ndarray, str]:
    """The first of ``keys`` in the NPZ at ``path`` (``allow_pickle=False``) and its name.

    Raises:
        ValueError: naming the file and the keys looked for (a missing file or key, a file that
            is not an NPZ, a member that cannot be read).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} file {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{what} file {str(path)!r} is not a valid NPZ file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            key = next((k for k in keys if k in npz.files), None)
            if key is None:
                wanted = " or ".join(repr(k) for k in keys)
                raise ValueError(f"{what} file {str(path)!r} has no key {wanted} (it holds "
                                 f"{sorted(npz.files)})")
            return np.asarray(npz[key]), key
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{what} file {str(path)!r} is not a valid NPZ file ({error})") from None


def finite_array(array: np.ndarray, name: str, ndim: int) -> np.ndarray:
    """``array`` if it is a numeric ``ndim``-D array of finite values; else a ValueError naming
    ``name`` and what is wrong (the shape, or how many values are NaN or infinite)."""
    if array.dtype.kind not in "biufc":
        raise ValueError(f"{name} must be a numeric array, got dtype {array.dtype}")
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        nan = int(np.count_nonzero(np.isnan(array)))
        raise ValueError(f"{name} must be finite: {int(bad.sum())} of its {array.size} values "
                         f"are not ({nan} NaN, {int(bad.sum()) - nan} infinite)")
    return array


def object_array(path: str | Path) -> np.ndarray:
    """``(H, W)`` complex64 the object in key ``objectGuess`` (or ``object``) of an NPZ file."""
    obj, key = npz_array(path, OBJECT_KEYS, "object")
    finite_array(obj, f"object file {str(path)!r}: key {key!r}", 2)
    if min(obj.shape) < 17:
        raise ValueError(f"object file {str(path)!r}: key {key!r} of shape {obj.shape} is too "
                         "small (at least 17 pixels per side: a patch of N=16 and one more)")
    return obj.astype(np.complex64)


def probe_array(path: str | Path) -> np.ndarray:
    """``(N, N)`` complex64 the probe in key ``probeGuess`` (or ``probe``) of an NPZ file, not
    zero (its size is checked against the job's N by the job's config)."""
    probe, key = npz_array(path, PROBE_KEYS, "probe")
    name = f"probe file {str(path)!r}: key {key!r}"
    finite_array(probe, name, 2)
    if probe.shape[0] != probe.shape[1]:
        raise ValueError(f"{name} must be square (N, N), got shape {probe.shape}")
    if not np.abs(probe).max(initial=0.0) > 0:
        raise ValueError(f"{name} is zero everywhere (no light)")
    return probe.astype(np.complex64)


def sha256(path: str | Path) -> str:
    """The file's sha256 (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def measured_file_summary(path: str | Path) -> tuple[int, str]:
    """``(patterns, sha256)`` of a measured scan's file (CXI in HDF5, or NPZ), read from its
    header: enough to validate a job before it loads the counts (which
    :mod:`ptycho.data.measured` checks in full)."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        patterns = _npz_patterns(path)
    else:
        patterns = _cxi_patterns(path)
    if patterns < 2:
        raise ValueError(f"{path} holds {patterns} diffraction pattern(s): a scan needs several")
    return patterns, sha256(path)


def _npz_patterns(path: Path) -> int:
    """The leading size of ``diffraction`` in a PtychoPINN NPZ, from the member's header."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a valid NPZ file (not a zip archive)")
    with zipfile.ZipFile(path) as archive:
        if "diffraction.npy" not in archive.namelist():
            members = sorted(name.removesuffix(".npy") for name in archive.namelist())
            raise ValueError(f"{path}: NPZ key 'diffraction' (the (M, N, N) amplitudes "
                             f"√counts) is missing (it holds {members})")
        with archive.open("diffraction.npy") as member:
            version = np.lib.format.read_magic(member)
            shape, _, _ = (np.lib.format.read_array_header_1_0(member) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(member))
    if len(shape) != 3:
        raise ValueError(f"{path}: NPZ key 'diffraction' must be (M, N, N), got shape {shape}")
    return int(shape[0])


def _cxi_patterns(path: Path) -> int:
    """The number of frames of a CXI file's counts, from the dataset's shape."""
    import h5py  # only for a CXI file

    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path}: not an HDF5 (CXI) file ({error})") from None
    with handle:
        found = next((name for name in CXI_DATA_PATHS if name in handle), None)
        if found is None:
            raise ValueError(f"{path}: no diffraction counts at {' or '.join(CXI_DATA_PATHS)}")
        shape = handle[found].shape
    if len(shape) != 3:
        raise ValueError(f"{path}: {found} must be (M, H, W) frames, got shape {shape}")
    return int(shape[0])
