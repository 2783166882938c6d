"""Reading one named array out of a user's NPZ file (objects and probes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["read_npz_array"]


def read_npz_array(path: str | Path, keys: tuple[str, ...], what: str) -> tuple[np.ndarray, str]:
    """The first of ``keys`` present in the NPZ at ``path`` (``allow_pickle=False``) and its name.

    Raises ``ValueError`` naming the file and the keys looked for when the file or key is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} path does not exist: {str(path)!r}")
    with np.load(path, allow_pickle=False) as npz:
        key = next((k for k in keys if k in npz.files), None)
        if key is None:
            wanted = " or ".join(repr(k) for k in keys)
            raise ValueError(f"{what} file {str(path)!r} has no key {wanted}")
        return np.asarray(npz[key]), key
