"""``evaluate``: a finished reconstruction → crop to the scanned region → align → amplitude and
phase metrics. Every arm's object is scored by this one function, on the same region.

The returned metric names are the ones the tracker logs (one flat ``dict[str, float]``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ptycho.evaluation.alignment import align_amplitude, align_phase, register, scanned_region
from ptycho.evaluation.metrics import BIT_THRESHOLDS, FRCCurve, collapse_metrics, image_metrics

__all__ = ["METRIC_KEYS", "Evaluation", "evaluate"]

log = logging.getLogger(__name__)

_PER_IMAGE = ("mae", "mse", "nrmse", "psnr", "ssim", "frc50", "frc17", "psnr_legacy255")
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
        reference_name: what the reconstruction was compared with (figure titles).
        reconstruction: ``(H, W)`` complex64 reconstructed object on the object grid.
        region: ``(rows, cols)`` slices of the scanned region in the object grid.
        extra: FRC crossings as fractions of Nyquist (0.5, 1/7, ½-bit and 1-bit thresholds),
            the half-period resolution at FRC 0.5 in object pixels, the collapse metrics, the
            registration shift, coverage.
    """

    metrics: dict[str, float]
    amplitude_truth: np.ndarray
    amplitude: np.ndarray
    phase_truth: np.ndarray
    phase: np.ndarray
    frc: dict[str, FRCCurve]
    reconstruction: np.ndarray
    region: tuple[slice, slice]
    extra: dict[str, float] = field(default_factory=dict)
    reference_name: str = "ground truth"
    """What the ``*_truth`` images are: the ground truth, or for a measured scan the reference
    reconstruction (:mod:`ptycho.truth_free`)."""


def evaluate(image: np.ndarray, obj: np.ndarray, coverage: np.ndarray, *, border: int,
             phase_alignment: str, subpixel_registration: bool) -> Evaluation:
    """Score a finished reconstruction against the ground-truth object, on the scanned region.

    Args:
        image: ``(H, W)`` complex reconstructed object on the grid of ``obj`` (any arm's).
        obj: ``(H, W)`` complex64 ground-truth object.
        coverage: ``(H, W)`` float how many patches' central parts cover each pixel
            (:func:`ptycho.reconstruction.stitch.scan_weight`): the same region for every arm.
        border: pixels trimmed from every side of the scanned region.
        phase_alignment: ``plane`` (least-squares plane), ``mean`` or ``none``.
        subpixel_registration: register the reconstruction to the truth first.

    Raises:
        ValueError: an image of another shape than ``obj``, a negative border.
    """
    image, obj = np.asarray(image), np.asarray(obj)
    if obj.ndim != 2 or image.shape != obj.shape:
        raise ValueError(f"image must have the object's shape {obj.shape}, got {image.shape}")
    if border < 0:
        raise ValueError(f"border must be >= 0 pixels, got {border!r}")
    rows, cols = scanned_region(coverage, border)
    image = image.astype(np.complex64)
    reconstruction, truth = image[rows, cols], obj[rows, cols]
    extra = {"coverage": float(np.mean(coverage[rows, cols] > 1e-3))}
    if subpixel_registration:
        reconstruction, shift = register(reconstruction, truth)
        extra["registration_shift_rows"], extra["registration_shift_cols"] = shift

    amplitude_truth = np.abs(truth).astype(np.float64)
    amplitude = align_amplitude(np.abs(reconstruction), amplitude_truth)
    phase_truth = np.angle(truth).astype(np.float64)
    phase = align_phase(np.angle(reconstruction), phase_truth, phase_alignment)

    metrics: dict[str, float] = {}
    curves: dict[str, FRCCurve] = {}
    for part, truth_image, aligned in (("amp", amplitude_truth, amplitude),
                                       ("phase", phase_truth, phase)):
        data_range = float(truth_image.max() - truth_image.min())
        if data_range < 1e-6:
            data_range = 2 * np.pi if part == "phase" else 1.0
            log.warning("ground-truth %s is constant: PSNR/SSIM use data_range=%.3g",
                        part, data_range)
        values, curve = image_metrics(truth_image, aligned, data_range)
        metrics.update({f"{part}_{name}": value for name, value in values.items()})
        curves[part] = curve
        # resolution in units that compare across N and region sizes: fractions of Nyquist
        # (0.5 cycles per object pixel) and the half-period in object pixels (1 at Nyquist)
        extra[f"{part}_frc50_nyquist"] = curve.fraction_of_nyquist(values["frc50"])
        extra[f"{part}_frc17_nyquist"] = curve.fraction_of_nyquist(values["frc17"])
        for name, bits in BIT_THRESHOLDS.items():
            extra[f"{part}_{name}_nyquist"] = curve.fraction_of_nyquist(
                curve.crossing(curve.bit_threshold(bits)))
        extra[f"{part}_resolution_px"] = (1.0 / extra[f"{part}_frc50_nyquist"]
                                          if values["frc50"] > 0 else float("inf"))
    extra.update(collapse_metrics(amplitude, amplitude_truth, phase, phase_truth))
    # What the best constant image scores after the same alignment (the truth's spread about
    # its mean amplitude and its best phase plane): an MSE above it is worse than no image,
    # and a Cramér–Rao bound above it says nothing.
    flat = align_amplitude(np.ones_like(amplitude_truth), amplitude_truth)
    extra["amp_mse_constant"] = float(np.mean((flat - amplitude_truth) ** 2))
    level = align_phase(np.zeros_like(phase_truth), phase_truth, phase_alignment)
    extra["phase_mse_constant"] = float(np.mean((level - phase_truth) ** 2))
    return Evaluation(
        metrics={key: metrics[key] for key in METRIC_KEYS}, amplitude_truth=amplitude_truth,
        amplitude=amplitude, phase_truth=phase_truth, phase=phase, frc=curves,
        reconstruction=image, region=(rows, cols), extra=extra)
