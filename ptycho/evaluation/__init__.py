"""Scoring against ground truth: alignment, metrics, and the Cramér–Rao bound of a scan. Takes
finished objects; how they are formed is :mod:`ptycho.reconstruction`'s and the arms'."""

from ptycho.evaluation.alignment import (
    PHASE_ALIGNMENTS,
    align_amplitude,
    align_phase,
    register,
    scanned_region,
    wrap,
)
from ptycho.evaluation.evaluate import METRIC_KEYS, Evaluation, evaluate
from ptycho.evaluation.metrics import (
    FRCCurve,
    collapse_metrics,
    degenerate_reason,
    frc,
    frc_crossing,
    image_metrics,
    psnr_legacy255,
)
from ptycho.evaluation.probe import align_probe, probe_error, transform_probe

__all__ = [
    "METRIC_KEYS", "PHASE_ALIGNMENTS", "Evaluation", "FRCCurve", "align_amplitude", "align_phase",
    "align_probe", "collapse_metrics", "degenerate_reason", "evaluate", "frc", "frc_crossing",
    "image_metrics", "probe_error", "psnr_legacy255", "register", "scanned_region",
    "transform_probe", "wrap"
]
