"""Scores without the ground truth (docs/physics.md §13.3): what a measured scan allows.

- **Half-split FRC.** The scan is split into two interleaved halves (a checkerboard of cells one
  scan step wide, so each half covers the whole field); each half is reconstructed by the same
  arm with the same settings, and the FRC of the two objects (aligned as the truth is: the
  job's registration, amplitude scale and phase plane) crosses the ½-bit threshold at
  ``halfsplit_{amp,phase}_frc_halfbit`` (fractions of Nyquist). It measures the resolution the
  data support at half the scan, a conservative estimate of the full scan's.
- **Agreement with a reference.** One reconstruction of the full-dose data (``eval.reference``,
  by default LSQML; measured data at the file's dose, simulated data at ``eval.reference_dose``)
  is cached per scan; the job's object is scored against it as against a truth (``ref_*``).

On simulated data the same numbers sit beside the truth's, so the report can show how well
they track it across doses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ptycho.arms import ArmInput, Reconstruction, arm
from ptycho.config import DataSource, JobConfig, settings_class
from ptycho.data import DatasetPair, cache_key, load_or_simulate
from ptycho.data.measured import MeasuredSpec
from ptycho.data.simulation import DataSpec, SimulationSpec
from ptycho.evaluation import Evaluation, evaluate

__all__ = ["AGREEMENT_KEYS", "agreement", "data_spec", "half_split", "halfsplit_frc",
           "reference_object"]

log = logging.getLogger(__name__)

AGREEMENT_KEYS = ("amp_nrmse", "phase_nrmse")
"""The metrics of :func:`evaluate` logged with the prefix ``ref_`` (beside its FRC crossings as
fractions of Nyquist)."""


def data_spec(config: JobConfig, dose: float | None = None) -> DataSpec:
    """What determines the job's data (and keys the dataset cache) at ``dose`` (default the
    job's): a simulation, or the measured scan thinned."""
    dose = config.dose if dose is None else dose
    if config.data.source == DataSource.file:
        noise_seed = config.seed if config.data.noise_seed is None else config.data.noise_seed
        return MeasuredSpec(N=config.N, dose=dose, noise_seed=int(noise_seed), data=config.data)
    return SimulationSpec(N=config.N, dose=dose, seed=config.seed, data=config.data)


def half_split(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved halves of a scan: indices of the positions on the black and the white
    cells of a checkerboard whose cells are the scan's step (the median distance to the nearest
    neighbour), so each half covers the field at half the density.

    Args:
        positions: ``(M, 2)`` float64 ``(x, y)`` pixels, ``M >= 4``.

    Returns:
        ``(first, second)`` sorted int64 index arrays, together every position once.

    Raises:
        ValueError: too few positions, or a half with under a third of them (a scan the
            checkerboard does not interleave).
    """
    positions = np.asarray(positions, np.float64)
    if len(positions) < 4:
        raise ValueError(f"a half-split needs at least 4 positions, got {len(positions)}")
    # a k-d tree, not the M x M distances: a measured scan has thousands of positions
    nearest, _ = cKDTree(positions).query(positions, k=2)
    step = float(np.median(nearest[:, 1]))
    cells = np.floor((positions - positions.min(axis=0)) / max(step, 1e-6) + 0.5).astype(int)
    black = (cells.sum(axis=1) % 2) == 0
    first, second = np.flatnonzero(black), np.flatnonzero(~black)
    if min(len(first), len(second)) < len(positions) / 3:  # e.g. a line scan: alternate instead
        first, second = np.arange(0, len(positions), 2), np.arange(1, len(positions), 2)
    return first, second


def halfsplit_frc(config: JobConfig, pair: DatasetPair, coverage: np.ndarray,
                  ) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """Reconstruct the two halves of the scored scan with the job's arm and settings (a
    learning arm trains on its half, or with ``design=generalize`` on the training scan as
    the job did); their FRC crossings (½-bit and 0.5, fractions of Nyquist) and SSIM.

    Returns:
        ``halfsplit_{amp,phase}_frc_halfbit``, ``halfsplit_{amp,phase}_frc50``,
        ``halfsplit_{amp,phase}_ssim``, ``halfsplit_patterns`` and ``time_halfsplit_s``; and the
        two ``(H, W)`` complex64 objects.
    """
    start = time.perf_counter()
    scored, objects = pair.test, []
    for number, index in enumerate(half_split(scored.positions), start=1):
        half = scored.subset(index)
        log.info("truth-free: reconstructing half %d of the scan (%d of %d patterns)", number,
                 len(half), len(scored))
        training = half.scan if pair.reconstructs else pair.train.scan
        done = arm(config.model.kind).reconstruct(ArmInput(training, half.scan, None), config,
                                                   None)
        objects.append(np.asarray(done.obj, np.complex64))
    compared = _compare(config, objects[0], objects[1], coverage)
    metrics = {f"halfsplit_{name}": value for name, value in _crossings(compared).items()}
    metrics.update(halfsplit_patterns=float(len(scored) // 2),
                   time_halfsplit_s=time.perf_counter() - start)
    log.info("truth-free: half-split FRC at ½ bit: amplitude %.3g, phase %.3g of Nyquist",
             metrics["halfsplit_amp_frc_halfbit"], metrics["halfsplit_phase_frc_halfbit"])
    return metrics, (objects[0], objects[1])


def reference_object(config: JobConfig, full_dose: float,
                     cache_dir: Path | None) -> tuple[np.ndarray, bool, float]:
    """The reference reconstruction of the full-dose data: ``(obj, cache_hit, seconds)``.

    ``eval.reference`` (an arm, at its default settings) reconstructs the scan at
    ``full_dose``; the object is cached under ``cache_dir/references`` by the data's cache key
    and the arm's settings, so every job of a scan shares one (a measured scan's, whatever the
    thinning's seed: at its full dose nothing is thinned).
    """
    settings = settings_class(config.eval.reference)()
    reference = dataclasses.replace(config, model=settings, dose=full_dose)
    if config.data.source == DataSource.file:  # unthinned: one reference for every noise seed
        reference = dataclasses.replace(
            reference, data=dataclasses.replace(config.data, noise_seed=0))
    spec = data_spec(reference, full_dose)
    blob = json.dumps({"data": cache_key(spec), "settings": dataclasses.asdict(settings),
                       "N": config.N}, sort_keys=True, default=str)
    key = hashlib.sha256(blob.encode()).hexdigest()[:24]
    path = None if cache_dir is None else cache_dir / "references" / f"{key}.npy"
    if path is not None and path.is_file():
        try:
            return np.load(path, allow_pickle=False).astype(np.complex64), True, 0.0
        except (OSError, ValueError) as error:
            log.warning("reference cache %s unreadable (%s): recomputing", path, error)
    start = time.perf_counter()
    pair, _ = load_or_simulate(spec, cache_dir)
    log.info("truth-free: reference %s at %.4g photons per pattern (%d patterns)",
             settings.kind, full_dose, len(pair.train))
    obj = np.asarray(_reconstruct(reference, pair).obj, np.complex64)
    seconds = time.perf_counter() - start
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_suffix(f".{time.time_ns()}.tmp.npy")
            np.save(staging, obj)
            staging.replace(path)
        except OSError as error:
            log.warning("could not cache the reference %s (%s)", path, error)
    return obj, False, seconds


def _reconstruct(config: JobConfig, pair: DatasetPair) -> Reconstruction:
    return arm(config.model.kind).reconstruct(
        ArmInput(pair.train.scan, pair.test.scan, None), config, None)


def agreement(config: JobConfig, obj: np.ndarray, reference: np.ndarray,
              coverage: np.ndarray) -> tuple[dict[str, float], Evaluation]:
    """The job's object against the reference, aligned as against a truth: ``ref_*`` metrics
    (SSIM, NRMSE, FRC crossings as fractions of Nyquist) and the evaluation (for figures)."""
    compared = _compare(config, obj, reference, coverage)
    metrics = {f"ref_{key}": compared.metrics[key] for key in AGREEMENT_KEYS}
    metrics.update({f"ref_{name}": value for name, value in _crossings(compared).items()})
    return metrics, compared


def _compare(config: JobConfig, image: np.ndarray, other: np.ndarray,
             coverage: np.ndarray) -> Evaluation:
    e = config.eval
    return evaluate(image, other, coverage, border=e.border,
                    phase_alignment=str(e.phase_alignment),
                    subpixel_registration=e.subpixel_registration)


def _crossings(compared: Evaluation) -> dict[str, float]:
    """FRC crossings (fractions of Nyquist) and SSIM of two images."""
    found = {}
    for part in ("amp", "phase"):
        found[f"{part}_frc_halfbit"] = compared.extra[f"{part}_frc_halfbit_nyquist"]
        found[f"{part}_frc50"] = compared.extra[f"{part}_frc50_nyquist"]
        found[f"{part}_ssim"] = compared.metrics[f"{part}_ssim"]
    return found
