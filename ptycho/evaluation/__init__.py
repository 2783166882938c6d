"""Evaluation: stitching, alignment and amplitude/phase metrics against ground truth."""

from ptycho.evaluation.alignment import (
    PHASE_ALIGNMENTS,
    align_amplitude,
    align_phase,
    register,
    scanned_region,
    wrap,
)
from ptycho.evaluation.evaluate import (
    METRIC_KEYS,
    Evaluation,
    evaluate,
    evaluate_object,
    scan_weight,
)
from ptycho.evaluation.metrics import (
    FRCCurve,
    collapse_metrics,
    degenerate_reason,
    frc,
    frc_crossing,
    image_metrics,
    psnr_legacy255,
)
from ptycho.evaluation.stitching import central_size, check_stitch_geometry, stitch, stitch_size

__all__ = [
    "METRIC_KEYS",
    "PHASE_ALIGNMENTS",
    "Evaluation",
    "FRCCurve",
    "align_amplitude",
    "align_phase",
    "central_size",
    "check_stitch_geometry",
    "collapse_metrics",
    "degenerate_reason",
    "evaluate",
    "evaluate_object",
    "frc",
    "frc_crossing",
    "image_metrics",
    "psnr_legacy255",
    "register",
    "scan_weight",
    "scanned_region",
    "stitch",
    "stitch_size",
    "wrap",
]
