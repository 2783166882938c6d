"""``evaluate``: stitched reconstruction → crop → align → amplitude and phase metrics;
``evaluate_object``: the same for a whole reconstructed object (an iterative engine's).

The returned metric names are the ones the tracker logs (one flat ``dict[str, float]``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import circstd

from ptycho.checks import check_choice
from ptycho.config import EvalConfig, PhaseSync, StitchWeighting
from ptycho.evaluation.alignment import (
    align_amplitude,
    align_phase,
    register,
    scanned_region,
)
from ptycho.evaluation.metrics import (
    BIT_THRESHOLDS,
    FRCCurve,
    collapse_metrics,
    image_metrics,
)
from ptycho.evaluation.stitching import (
    check_stitch_geometry,
    likelihood_offsets,
    phase_offsets,
    stitch,
)

__all__ = ["METRIC_KEYS", "Evaluation", "evaluate", "evaluate_object", "scan_weight"]

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
        stitched: ``(H, W)`` complex64 stitched reconstruction on the object grid.
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
    stitch_weighting: str = EvalConfig.stitch_weighting,
    phase_sync: str = EvalConfig.phase_sync,
    probe: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    patterns: np.ndarray | None = None,
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
        stitch_weighting: ``probe`` (each patch pixel weighted by ``|probe|²``) or ``uniform``
            (the central parts, evenly); the scored region is the same for both.
        phase_sync: how each patch's unobservable constant phase is set before stitching
            (:class:`~ptycho.config.PhaseSync`): ``overlap`` from the overlaps alone
            (:func:`~ptycho.evaluation.stitching.phase_offsets`, weighted by the probe
            intensity); ``likelihood`` from there by the measured ``counts``
            (:func:`~ptycho.evaluation.stitching.likelihood_offsets`); ``none``. In ``extra``:
            ``phase_sync_offset_std``, the offsets' circular spread (radians); with
            ``likelihood`` also ``phase_sync_nll_gain_per_photon`` (nats the counts gained over
            the overlap offsets), ``phase_sync_iterations``, and the scores of the overlap
            offsets' stitch, ``overlap_sync_amp_ssim`` and ``overlap_sync_phase_ssim``.
        probe: ``(N, N)`` complex probe the patterns were measured with; needed for
            ``phase_sync`` and the ``probe`` weighting.
        counts: ``(K, N, N)`` photons measured at each patch's position; needed for
            ``phase_sync='likelihood'``.
        patterns: ``(K,)`` index of the measured pattern behind each patch (g > 1 groups
            share patterns, each counted once by the likelihood); ``None``: one per patch.
        chunk_size: patches stitched per step (memory bound).

    Raises:
        ValueError: bad shapes, a missing probe, or a scan so sparse that a whole
            patch cannot fill the gaps between centres
            (:func:`~ptycho.evaluation.stitching.check_stitch_geometry`).
    """
    obj = np.asarray(obj)
    if obj.ndim != 2:
        raise ValueError(f"obj must be a 2-D array, got shape {obj.shape}")
    if border < 0:
        raise ValueError(f"border must be >= 0 pixels, got {border!r}")
    patches = np.asarray(patches)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"patches must have shape (K, N, N), got {patches.shape}")
    N = patches.shape[-1]
    keep = check_stitch_geometry(positions, N=N, keep_fraction=keep_fraction)
    weighting = check_choice(stitch_weighting, StitchWeighting, "stitch_weighting")
    sync_mode = check_choice(phase_sync, PhaseSync, "phase_sync")
    intensity = None
    if sync_mode != PhaseSync.none or weighting == StitchWeighting.probe:
        if probe is None or np.shape(probe) != (N, N):
            raise ValueError(
                f"phase_sync and stitch_weighting='probe' need the ({N}, {N}) probe, got "
                f"{None if probe is None else np.shape(probe)}")
        intensity = np.abs(np.asarray(probe)) ** 2
    if sync_mode == PhaseSync.likelihood and (counts is None
                                              or np.shape(counts) != patches.shape):
        raise ValueError(f"phase_sync='likelihood' needs the measured counts {patches.shape}, "
                         f"got {None if counts is None else np.shape(counts)}")
    stitch_weight = intensity if weighting == StitchWeighting.probe else None

    def scored(offsets: np.ndarray | None) -> Evaluation:
        rotated = (patches if offsets is None else
                   (patches * np.exp(1j * offsets)[:, None, None]).astype(np.complex64))
        stitched, weight = stitch(rotated, positions, obj.shape, keep=keep,
                                  weight=stitch_weight, chunk_size=chunk_size)
        region = scanned_region(weight, border)
        return _score(stitched, obj, region, weight, phase_alignment=phase_alignment,
                      subpixel_registration=subpixel_registration)

    if sync_mode == PhaseSync.none:
        return scored(None)
    offsets = phase_offsets(patches, positions, intensity)
    sync: dict[str, float] = {}
    if sync_mode == PhaseSync.likelihood:
        overlap = scored(offsets)  # what the overlaps alone give, logged beside the result
        sync["overlap_sync_amp_ssim"] = overlap.metrics["amp_ssim"]
        sync["overlap_sync_phase_ssim"] = overlap.metrics["phase_ssim"]
        offsets, info = likelihood_offsets(patches, positions, probe, counts, obj.shape,
                                           keep=keep, weight=stitch_weight, initial=offsets,
                                           patterns=patterns)
        sync["phase_sync_nll_gain_per_photon"] = info["nll_gain_per_photon"]
        sync["phase_sync_iterations"] = info["iterations"]
    sync["phase_sync_offset_std"] = float(circstd(offsets, high=np.pi, low=-np.pi))
    evaluation = scored(offsets)
    evaluation.extra.update(sync)
    return evaluation


def scan_weight(
    positions: np.ndarray,
    N: int,
    object_shape: tuple[int, int],
    *,
    keep_fraction: float = EvalConfig.keep_fraction,
) -> np.ndarray:
    """``(H, W)`` float32 stitch weight of a scan: how many patches' central parts cover each
    pixel, exactly as :func:`evaluate` stitches them (so :func:`evaluate_object` scores the same
    region).

    Args:
        positions: ``(K, 2)`` float ``(x, y)`` patch centres, pixels of the object grid.
        N: patch side, a power of two ≥ 16.
        object_shape: ``(H, W)`` of the object grid.
        keep_fraction: as in :func:`evaluate`.
    """
    positions = np.asarray(positions)
    keep = check_stitch_geometry(positions, N=N, keep_fraction=keep_fraction)
    ones = np.ones((len(positions), N, N), np.complex64)
    return stitch(ones, positions, object_shape, keep=keep)[1]


def evaluate_object(
    image: np.ndarray,
    positions: np.ndarray,
    N: int,
    obj: np.ndarray,
    *,
    keep_fraction: float = EvalConfig.keep_fraction,
    border: int = EvalConfig.border,
    phase_alignment: str = EvalConfig.phase_alignment,
    subpixel_registration: bool = EvalConfig.subpixel_registration,
) -> Evaluation:
    """Evaluate a reconstructed whole object (an iterative engine's output) exactly like
    :func:`evaluate` scores stitched patches: the scanned region of the same scan and ``N``,
    the same alignment and the same metrics, so the numbers of the two paths compare by
    construction.

    Args:
        image: ``(H, W)`` complex reconstructed object on the grid of ``obj``.
        positions: ``(K, 2)`` float ``(x, y)`` scan positions (patch centres) the region is
            taken from, pixels of the object grid.
        N: patch side of the scan, pixels.
        obj: ``(H, W)`` complex64 ground-truth object.

    Raises:
        ValueError: an image of another shape than ``obj``, or a scan that cannot be stitched.
    """
    image, obj = np.asarray(image), np.asarray(obj)
    if obj.ndim != 2 or image.shape != obj.shape:
        raise ValueError(f"image must have the object's shape {obj.shape}, got {image.shape}")
    if border < 0:
        raise ValueError(f"border must be >= 0 pixels, got {border!r}")
    weight = scan_weight(positions, N, obj.shape, keep_fraction=keep_fraction)
    region = scanned_region(weight, border)
    return _score(image.astype(np.complex64), obj, region, weight,
                  phase_alignment=phase_alignment, subpixel_registration=subpixel_registration)


def _score(
    image: np.ndarray,
    obj: np.ndarray,
    region: tuple[slice, slice],
    weight: np.ndarray,
    *,
    phase_alignment: str,
    subpixel_registration: bool,
) -> Evaluation:
    """Crop ``image`` and ``obj`` to ``region``, align, and compute :data:`METRIC_KEYS`."""
    rows, cols = region
    reconstruction = image[rows, cols]
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
    for part, truth_image, aligned in (
        ("amp", amplitude_truth, amplitude),
        ("phase", phase_truth, phase),
    ):
        data_range = float(truth_image.max() - truth_image.min())
        if data_range < 1e-6:
            data_range = 2 * np.pi if part == "phase" else 1.0
            log.warning("ground-truth %s is constant: PSNR/SSIM use data_range=%.3g",
                        part, data_range)
        values, curve = image_metrics(truth_image, aligned, data_range)
        for name, value in values.items():
            metrics[f"{part}_{name}"] = value
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
    return Evaluation(
        metrics={key: metrics[key] for key in METRIC_KEYS},
        amplitude_truth=amplitude_truth,
        amplitude=amplitude,
        phase_truth=phase_truth,
        phase=phase,
        frc=curves,
        stitched=image,
        region=(rows, cols),
        extra=extra,
    )
