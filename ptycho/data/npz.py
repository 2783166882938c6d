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
_metadata      () optional          str        JSON: dose, measured_dose, background (photons
                                               per pixel), provenance (ours)
xcoords_nominal (M,) optional       float64    the positions the reconstructors are given,
ycoords_nominal (M,) optional       float64    when the true ones (xcoords) differ (ours)
probe_start    (N, N) optional      complex64  the probe the reconstructors start from (ours)
mask           (N, N) optional      bool       True where the detector measures (ours)
grid           (2,) optional        int64      (H, W) object grid of a scan without its truth
                                               (a measured scan; then no objectGuess, no Y)
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
from ptycho.physics.detector import Detector

__all__ = ["REQUIRED_KEYS", "load_npz", "save_npz"]

REQUIRED_KEYS = ("diffraction", "xcoords", "ycoords", "probeGuess", "objectGuess")


def save_npz(path: str | Path, data: DiffractionData) -> Path:
    """Write ``data`` to ``path`` (uncompressed NPZ); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"dose": data.dose, "measured_dose": data.measured_dose, **data.metadata}
    conditions: dict[str, np.ndarray] = {}
    if data.nominal_positions is not None:
        conditions["xcoords_nominal"] = data.nominal_positions[:, 0].astype(np.float64)
        conditions["ycoords_nominal"] = data.nominal_positions[:, 1].astype(np.float64)
    if data.probe_start is not None:
        conditions["probe_start"] = data.probe_start.astype(np.complex64)
    if data.detector.mask is not None:
        conditions["mask"] = data.detector.mask
    if data.detector.background:
        metadata["background"] = data.detector.background
    if data.has_truth:
        conditions["objectGuess"] = data.obj.astype(np.complex64)
        conditions["Y"] = data.patches.astype(np.complex64)
    else:
        conditions["grid"] = np.asarray(data.object_shape, np.int64)
    with path.open("wb") as handle:
        np.savez(handle, diffraction=np.sqrt(data.counts).astype(np.float32),
                 xcoords=data.positions[:, 0].astype(np.float64),
                 ycoords=data.positions[:, 1].astype(np.float64),
                 probeGuess=data.probe.astype(np.complex64),
                 counts=data.counts.astype(np.float32), _metadata=np.array(json.dumps(metadata)),
                 **conditions)
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
        required = [key for key in REQUIRED_KEYS if key != "objectGuess" or "grid" not in npz.files]
        missing = [key for key in required if key not in npz.files]
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
    positions = np.stack([xcoords, ycoords], axis=1).astype(np.float64)
    truth = _truth(files, positions, diffraction.shape)

    if "counts" in files:
        counts = _checked(files, "counts", 3, "fiu")
        if counts.shape != diffraction.shape:
            raise ValueError(
                f"NPZ key 'counts' must have shape {diffraction.shape}, got {counts.shape}"
            )
    else:
        counts = np.square(diffraction.astype(np.float64))
    counts = counts.astype(np.float32)

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
                           dose=dose, metadata=metadata, **truth,
                           **_conditions(files, n_patterns, N, metadata.pop("background", 0.0)))


def _truth(files: dict[str, np.ndarray], positions: np.ndarray,
           shape: tuple[int, ...]) -> dict[str, object]:
    """``obj`` and ``patches`` (``Y``, else cut from ``objectGuess``), or the ``grid`` of a scan
    stored without its truth."""
    if "objectGuess" not in files:
        grid = files["grid"]
        if grid.shape != (2,) or grid.dtype.kind not in "iu" or grid.min() < 1:
            raise ValueError(f"NPZ key 'grid' must be 2 positive integers (H, W), got {grid}")
        return {"obj": None, "patches": None, "grid": (int(grid[0]), int(grid[1]))}
    obj = _checked(files, "objectGuess", 2, "c").astype(np.complex64)
    if "Y" not in files:
        return {"obj": obj, "patches": extract_object_patches(obj, positions, shape[1])}
    patches = files["Y"]
    if patches.ndim == 4 and patches.shape[-1] == 1:
        patches = patches[..., 0]
    if patches.shape != shape or patches.dtype.kind != "c":
        raise ValueError(f"NPZ key 'Y' must be complex with shape {shape}, got {patches.dtype} "
                         f"{patches.shape}")
    return {"obj": obj, "patches": patches.astype(np.complex64)}


def _conditions(files: dict[str, np.ndarray], n_patterns: int, N: int,
                background: float) -> dict[str, object]:
    """The optional keys of an experiment's conditions: nominal positions, the probe the
    reconstructors start from, the detector's mask and background."""
    found: dict[str, object] = {}
    if "xcoords_nominal" in files or "ycoords_nominal" in files:
        xs = _checked(files, "xcoords_nominal", 1, "fiu")
        ys = _checked(files, "ycoords_nominal", 1, "fiu")
        if xs.shape != (n_patterns,) or ys.shape != (n_patterns,):
            raise ValueError(f"NPZ keys 'xcoords_nominal' and 'ycoords_nominal' must have shape "
                             f"({n_patterns},), got {xs.shape} and {ys.shape}")
        found["nominal_positions"] = np.stack([xs, ys], axis=1).astype(np.float64)
    if "probe_start" in files:
        start = _checked(files, "probe_start", 2, "c")
        if start.shape != (N, N):
            raise ValueError(f"NPZ key 'probe_start' must have shape ({N}, {N}), "
                             f"got {start.shape}")
        found["probe_start"] = start.astype(np.complex64)
    mask = files.get("mask")
    if mask is not None and (mask.shape != (N, N) or mask.dtype != bool):
        raise ValueError(f"NPZ key 'mask' must be a ({N}, {N}) bool array, got {mask.dtype} "
                         f"{mask.shape}")
    found["detector"] = Detector(mask, float(background))
    return found
