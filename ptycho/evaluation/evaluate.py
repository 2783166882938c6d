"""``evaluate``: stitched reconstruction → crop → align → amplitude and phase metrics.

The returned metric names are the ones the tracker logs (one flat ``dict[str, float]``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ptycho.config import EvalConfig
from ptycho.evaluation.alignment import (
    align_amplitude,
    align_phase,
    register,
    scanned_region,
)
from ptycho.evaluation.metrics import FRCCurve, image_metrics
from ptycho.evaluation.stitching import check_stitch_geometry, stitch

__all__ = ["METRIC_KEYS", "Evaluation", "evaluate"]

log = logging.getLogger(__name__)

_PER_IMAGE = ("mae", "mse", "psnr", "ssim", "frc50", "frc17", "psnr_legacy255")
METRIC_KEYS = tuple(f"{part}_{name}" for part in ("amp", "phase") for name in _PER_IMAGE)
"""The exact keys of :attr:`Evaluation.metrics`."""


@dataclass
class Evaluation:
    """Metrics plus what figures need.

    Attributes:
        metrics: :data:`METRIC_KEYS` → finite floats (FRC in ring indices).
        amplitude_truth, amplitude: aligned ``(h, w)`` float64 images of the scanned region.
        phase_truth, phase: aligned ``(h, w)`` float64 images, radians.
        frc: ``{"amp": FRCCurve, "phase": FRCCurve}``.
        stitched: ``(H, W)`` complex64 stitched reconstruction on the object grid.
        region: ``(rows, cols)`` slices of the scanned region in the object grid.
        extra: FRC crossings as fractions of Nyquist, the registration shift, coverage.
    """

    metrics: dict[str, float]
    amplitude_truth: np.ndarray
    amplitude: np.ndarray
    phase_truth: np.ndarray
    phase: np.ndarray
    frc: dict[str, FRCCurve]
    stitched: np.ndarray
    region: tuple[slice, slice]
    extra: dict[str, float] = field(default_factory=dict)


def evaluate(
    patches: np.ndarray,
    positions: np.ndarray,
    obj: np.ndarray,
    *,
    keep_fraction: float = EvalConfig.keep_fraction,
    border: int = EvalConfig.border,
    phase_alignment: str = EvalConfig.phase_alignment,
    subpixel_registration: bool = EvalConfig.subpixel_registration,
    chunk_size: int = 256,
) -> Evaluation:
    """Evaluate reconstructed patches against the ground-truth object.

    Args:
        patches: ``(K, N, N)`` complex64 reconstructed object patches.
        positions: ``(K, 2)`` ``(x, y)`` pixels where they belong on ``obj``.
        obj: ``(H, W)`` complex64 ground-truth object.
        keep_fraction: side of each patch's central part used in stitching, as a fraction of N;
            widened where the scan is sparser (:func:`~ptycho.evaluation.stitching.stitch_size`),
            so the stitch has no holes between patch centres.
        border: pixels trimmed from every side of the scanned region.
        phase_alignment: ``plane`` (least-squares plane), ``mean`` or ``none``.
        subpixel_registration: register the reconstruction to the truth first.
        chunk_size: patches stitched per step (memory bound).

    Raises:
        ValueError: bad shapes, or a scan so sparse that a whole patch cannot fill the gaps
            between centres (:func:`~ptycho.evaluation.stitching.check_stitch_geometry`).
    """
    obj = np.asarray(obj)
    if obj.ndim != 2:
        raise ValueError(f"obj must be a 2-D array, got shape {obj.shape}")
    if border < 0:
        raise ValueError(f"border must be >= 0 pixels, got {border!r}")
    patches = np.asarray(patches)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"patches must have shape (K, N, N), got {patches.shape}")
    keep = check_stitch_geometry(positions, N=patches.shape[-1], keep_fraction=keep_fraction)
    stitched, weight = stitch(patches, positions, obj.shape, keep=keep, chunk_size=chunk_size)
    rows, cols = scanned_region(weight, border)
    reconstruction = stitched[rows, cols]
    truth = obj[rows, cols]
    extra = {"coverage": float(np.mean(weight[rows, cols] > 1e-3))}
    if subpixel_registration:
        reconstruction, shift = register(reconstruction, truth)
        extra["registration_shift_rows"], extra["registration_shift_cols"] = shift

    amplitude_truth = np.abs(truth).astype(np.float64)
    amplitude = align_amplitude(np.abs(reconstruction), amplitude_truth)
    phase_truth = np.angle(truth).astype(np.float64)
    phase = align_phase(np.angle(reconstruction), phase_truth, phase_alignment)

    metrics: dict[str, float] = {}
    curves: dict[str, FRCCurve] = {}
    for part, truth_image, image in (
        ("amp", amplitude_truth, amplitude),
        ("phase", phase_truth, phase),
    ):
        data_range = float(truth_image.max() - truth_image.min())
        if data_range < 1e-6:
            data_range = 2 * np.pi if part == "phase" else 1.0
            log.warning("ground-truth %s is constant: PSNR/SSIM use data_range=%.3g",
                        part, data_range)
        values, curve = image_metrics(truth_image, image, data_range)
        for name, value in values.items():
            metrics[f"{part}_{name}"] = value
        curves[part] = curve
        extra[f"{part}_frc50_nyquist"] = values["frc50"] / curve.nyquist
        extra[f"{part}_frc17_nyquist"] = values["frc17"] / curve.nyquist
    return Evaluation(
        metrics={key: metrics[key] for key in METRIC_KEYS},
        amplitude_truth=amplitude_truth,
        amplitude=amplitude,
        phase_truth=phase_truth,
        phase=phase,
        frc=curves,
        stitched=stitched,
        region=(rows, cols),
        extra=extra,
    )
