"""NPZ I/O compatible with PtychoPINN's data contract, so users can bring or take data.

Keys written and read:

=============  ===================  =========  ==============================================
key            shape                dtype      meaning
=============  ===================  =========  ==============================================
diffraction    (M, N, N)            float32    amplitude √counts, DC at (N/2, N/2)
xcoords        (M,)                 float64    patch-centre column on ``objectGuess``, pixels
ycoords        (M,)                 float64    patch-centre row, pixels
probeGuess     (N, N)               complex64  probe
objectGuess    (H, W)               complex64  object
Y              (M, N, N) optional   complex64  ground-truth object patches
counts         (M, N, N) optional   float32    photon counts (ours; else diffraction²)
_metadata      () optional          str        JSON: dose, measured_dose, provenance (ours)
=============  ===================  =========  ==============================================

Loading uses ``allow_pickle=False``. A file that is not an NPZ is refused with
``"<path>: not a valid NPZ file (…)"``; a missing key or a wrong shape or dtype with a
``ValueError`` naming the key.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from ptycho.checks import check_dose
from ptycho.data.arrays import open_npz
from ptycho.data.dataset import DiffractionData, extract_object_patches

__all__ = ["REQUIRED_KEYS", "load_npz", "save_npz"]

REQUIRED_KEYS = ("diffraction", "xcoords", "ycoords", "probeGuess", "objectGuess")


def save_npz(path: str | Path, data: DiffractionData) -> Path:
    """Write ``data`` to ``path`` (uncompressed NPZ); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"dose": data.dose, "measured_dose": data.measured_dose, **data.metadata}
    with path.open("wb") as handle:
        np.savez(handle, diffraction=np.sqrt(data.counts).astype(np.float32),
                 xcoords=data.positions[:, 0].astype(np.float64),
                 ycoords=data.positions[:, 1].astype(np.float64),
                 probeGuess=data.probe.astype(np.complex64),
                 objectGuess=data.obj.astype(np.complex64), Y=data.patches.astype(np.complex64),
                 counts=data.counts.astype(np.float32), _metadata=np.array(json.dumps(metadata)))
    return path


def _checked(files: dict[str, np.ndarray], key: str, ndim: int, kinds: str) -> np.ndarray:
    array = files[key]
    if array.ndim != ndim or array.dtype.kind not in kinds:
        raise ValueError(
            f"NPZ key {key!r} must be a {ndim}-D {'complex' if kinds == 'c' else 'real'} array, "
            f"got shape {array.shape} dtype {array.dtype}"
        )
    return array


def load_npz(path: str | Path) -> DiffractionData:
    """Read a PtychoPINN-style NPZ into a validated :class:`DiffractionData`.

    ``counts`` defaults to ``diffraction²``; ``Y`` to patches cut from ``objectGuess``; the dose to
    the measured one.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"NPZ file does not exist: {str(path)!r}")
    with open_npz(path) as npz:
        missing = [key for key in REQUIRED_KEYS if key not in npz.files]
        if missing:
            raise ValueError(
                f"NPZ file {str(path)!r} is missing required key(s) {missing} "
                f"(needs {list(REQUIRED_KEYS)})"
            )
        try:
            files = {key: npz[key] for key in npz.files}
        except (OSError, EOFError, zipfile.BadZipFile) as error:  # a damaged member
            raise ValueError(f"{path}: not a valid NPZ file ({error})") from None

    diffraction = _checked(files, "diffraction", 3, "f")
    n_patterns, N = diffraction.shape[0], diffraction.shape[1]
    if diffraction.shape[2] != N:
        raise ValueError(f"NPZ key 'diffraction' must be (M, N, N), got {diffraction.shape}")
    xcoords = _checked(files, "xcoords", 1, "fiu")
    ycoords = _checked(files, "ycoords", 1, "fiu")
    for key, coords in (("xcoords", xcoords), ("ycoords", ycoords)):
        if coords.shape != (n_patterns,):
            raise ValueError(
                f"NPZ key {key!r} must have shape ({n_patterns},) to match 'diffraction', "
                f"got {coords.shape}"
            )
    probe = _checked(files, "probeGuess", 2, "c")
    if probe.shape != (N, N):
        raise ValueError(f"NPZ key 'probeGuess' must have shape ({N}, {N}), got {probe.shape}")
    obj = _checked(files, "objectGuess", 2, "c").astype(np.complex64)
    positions = np.stack([xcoords, ycoords], axis=1).astype(np.float64)

    if "counts" in files:
        counts = _checked(files, "counts", 3, "fiu")
        if counts.shape != diffraction.shape:
            raise ValueError(
                f"NPZ key 'counts' must have shape {diffraction.shape}, got {counts.shape}"
            )
    else:
        counts = np.square(diffraction.astype(np.float64))
    counts = counts.astype(np.float32)

    if "Y" in files:
        patches = files["Y"]
        if patches.ndim == 4 and patches.shape[-1] == 1:
            patches = patches[..., 0]
        if patches.shape != diffraction.shape or patches.dtype.kind != "c":
            raise ValueError(
                f"NPZ key 'Y' must be complex with shape {diffraction.shape}, "
                f"got {patches.dtype} {patches.shape}"
            )
        patches = patches.astype(np.complex64)
    else:
        patches = extract_object_patches(obj, positions, N)

    metadata: dict = {}
    if "_metadata" in files:
        try:
            metadata = json.loads(str(files["_metadata"]))
        except json.JSONDecodeError as error:
            raise ValueError(f"NPZ key '_metadata' is not valid JSON: {error}") from None
    measured = float(counts.sum(axis=(1, 2), dtype=np.float64).mean())
    dose = check_dose(metadata.pop("dose", measured), "NPZ _metadata dose")
    metadata.pop("measured_dose", None)
    return DiffractionData(counts=counts, positions=positions, probe=probe.astype(np.complex64),
                           obj=obj, patches=patches, dose=dose, metadata=metadata)
