"""The held-out protocol: which data the project's settings were chosen on.

Wave 2 chose the quickstart's and the paper preset's settings (the phase synchronisation, the
stitching weights, the activation, the epoch count, the paper's training) partly by truth
metrics of seeds 0 and 1 of the ``lines`` object; those runs cannot confirm those settings. A
job records which of its data were used that way (tag ``tuning``, and the report's arm label),
so tuned and held-out results are never pooled (docs/report.md).
"""

from __future__ import annotations

__all__ = ["TUNED_OBJECTS", "TUNED_SEEDS", "tuning_status"]

TUNED_OBJECTS = ("lines",)
"""Object classes settings were chosen on."""
TUNED_SEEDS = (0, 1)
"""Seeds (object, scan, weights) settings were chosen on."""


def tuning_status(object_kind: str, seed: int) -> str:
    """``tuned`` (class and seed both used for tuning), ``held-out seed`` (a tuned class, a
    fresh seed), ``held-out object`` (a fresh class, a tuned seed) or ``held-out`` (neither)."""
    tuned_object, tuned_seed = str(object_kind) in TUNED_OBJECTS, int(seed) in TUNED_SEEDS
    if tuned_object and tuned_seed:
        return "tuned"
    if tuned_object:
        return "held-out seed"
    return "held-out object" if tuned_seed else "held-out"
