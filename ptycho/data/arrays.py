"""Opening NPZ files safely, and reading one named array out of a user's NPZ (objects, probes)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from numpy.lib.npyio import NpzFile

__all__ = ["is_npz_file", "open_npz", "read_npz_array"]

# What a file that is not a readable NPZ makes np.load or zipfile raise.
_NOT_NPZ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile)


def is_npz_file(path: str | Path) -> bool:
    """Whether ``path`` is an existing file that is a zip archive, as every NPZ is.

    Cheap (reads the zip's end record only); it does not check the archive's members.
    """
    path = Path(path)
    try:
        return path.is_file() and zipfile.is_zipfile(path)
    except OSError:  # unreadable: permissions, a vanished file
        return False


def open_npz(path: str | Path) -> NpzFile:
    """Open the NPZ at ``path`` with ``allow_pickle=False`` (use it as a context manager).

    Raises:
        ValueError: ``"<path>: not a valid NPZ file (<why>)"`` when the file is missing, is not a
            zip archive (a text file named ``x.npz``, a single ``.npy``) or cannot be read as one.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: not a valid NPZ file (no such file)")
    if not is_npz_file(path):
        raise ValueError(f"{path}: not a valid NPZ file (not a zip archive)")
    try:
        npz = np.load(path, allow_pickle=False)
    except _NOT_NPZ_ERRORS as error:
        raise ValueError(f"{path}: not a valid NPZ file ({error})") from None
    if not isinstance(npz, NpzFile):  # pragma: no cover - a zip always loads as an NpzFile
        raise ValueError(f"{path}: not a valid NPZ file (loaded as {type(npz).__name__})")
    return npz


def read_npz_array(path: str | Path, keys: tuple[str, ...], what: str) -> tuple[np.ndarray, str]:
    """The first of ``keys`` present in the NPZ at ``path`` (``allow_pickle=False``) and its name.

    Raises ``ValueError`` naming the file and the keys looked for when the file or key is missing,
    and ``"<path>: not a valid NPZ file (…)"`` when the file is not an NPZ.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} path does not exist: {str(path)!r}")
    with open_npz(path) as npz:
        key = next((k for k in keys if k in npz.files), None)
        if key is None:
            wanted = " or ".join(repr(k) for k in keys)
            raise ValueError(f"{what} file {str(path)!r} has no key {wanted}")
        try:
            return np.asarray(npz[key]), key
        except (OSError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path}: not a valid NPZ file ({error})") from None
