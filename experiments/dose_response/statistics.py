"""Statistics over a study's replicates: bootstrap confidence intervals of medians and of the
dose ratio at which two arms reach one quality.

The bootstrap is ``scipy.stats.bootstrap`` (bias-corrected and accelerated, BCa; the percentile
method where BCa is undefined, e.g. two replicates or all values equal). The dose-ratio interval
is a percentile bootstrap written here, because it resamples each (arm, dose) cell's replicates
independently and recomputes a threshold crossing from the resampled medians, which is not a
statistic of one sample that ``scipy.stats.bootstrap`` could take.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "CONFIDENCE",
    "MIN_REACHED",
    "RATIO_RESAMPLES",
    "RESAMPLES",
    "DoseRatio",
    "crossing_dose",
    "dose_ratio",
    "median_ci",
]

CONFIDENCE = 0.95
RESAMPLES = 2000
"""Bootstrap resamples of each median's interval."""
RATIO_RESAMPLES = 1000
"""Bootstrap resamples of a dose ratio (each recomputes every cell's median)."""
MIN_REACHED = 0.95
"""A dose ratio gets an interval only when both arms cross the threshold (inside their measured
doses) in at least this fraction of the resamples."""


def median_ci(values: Sequence[float] | np.ndarray, *, confidence: float = CONFIDENCE,
              resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Bootstrap ``confidence`` interval of the median of ``values`` (finite ones only).

    One value: ``(nan, nan)`` (no spread to resample). All values equal: that value twice.
    BCa where it is defined, else the percentile interval. With fewer than about 5 replicates a
    bootstrap interval of a median is too narrow (measured coverage of a nominal 95% interval:
    0.78 at n=3, 0.91 at n=5, 0.95 at n=12; ``tests/experiments/test_statistics.py``).
    """
    data = np.asarray(values, np.float64)
    data = data[np.isfinite(data)]
    if data.size < 2:
        return math.nan, math.nan
    if np.all(data == data[0]):
        return float(data[0]), float(data[0])
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's degenerate-data warning: fall back below
            result = stats.bootstrap((data,), np.median, confidence_level=confidence,
                                     n_resamples=resamples, method=method,
                                     rng=np.random.default_rng(seed), vectorized=True)
        low, high = result.confidence_interval
        if np.isfinite(low) and np.isfinite(high):
            return float(low), float(high)
    return math.nan, math.nan


def crossing_dose(doses: np.ndarray, values: np.ndarray, threshold: float) -> tuple[float, str]:
    """The lowest dose at which ``values`` (ascending ``doses``) reach ``threshold``.

    Between two measured doses the crossing is interpolated linearly in log10(dose). Returns
    ``(dose, "=")``; ``(lowest dose, "<=")`` when the first dose already reaches it; ``(nan,
    "not reached")`` when none does. NaN values are skipped.
    """
    keep = np.isfinite(values)
    doses, values = np.asarray(doses, float)[keep], np.asarray(values, float)[keep]
    for i, (dose, value) in enumerate(zip(doses, values, strict=True)):
        if value >= threshold:
            if i == 0:
                return float(dose), "<="
            d0, v0 = doses[i - 1], values[i - 1]
            fraction = (threshold - v0) / (value - v0)
            return float(10 ** (math.log10(d0) + fraction * (math.log10(dose)
                                                              - math.log10(d0)))), "="
    return math.nan, "not reached"


@dataclass(frozen=True)
class DoseRatio:
    """How many times more dose arm ``a`` needs than arm ``b`` to reach one quality.

    ``log10_ratio`` is from the medians; its interval from resampling each cell's replicates;
    ``reached`` is the fraction of resamples in which both arms cross the threshold inside
    their measured doses; below :data:`MIN_REACHED` there is no interval (NaN).
    """

    log10_ratio: float
    log10_low: float
    log10_high: float
    reached: float
    resamples: int

    def text(self) -> str:
        """``10^(1.20 [0.90, 1.50])``: the ratio with its interval, or why there is none."""
        if not math.isfinite(self.log10_ratio):
            return ("no ratio (an arm does not cross the threshold inside its measured doses: "
                    "never, or already at the lowest)")
        if not (math.isfinite(self.log10_low) and math.isfinite(self.log10_high)):
            why = (f"both cross in only {self.reached:.0%} of resamples"
                   if self.reached < MIN_REACHED else "one replicate per dose")
            return f"10^({self.log10_ratio:.2f}) (no interval: {why})"
        return f"10^({self.log10_ratio:.2f} [{self.log10_low:.2f}, {self.log10_high:.2f}])"


def _cell_medians(cells: Sequence[np.ndarray], rng: np.random.Generator | None) -> np.ndarray:
    """Median of each cell, of a resample with replacement when ``rng`` is given."""
    medians = []
    for cell in cells:
        if cell.size == 0:
            medians.append(math.nan)
        elif rng is None:
            medians.append(float(np.median(cell)))
        else:
            medians.append(float(np.median(rng.choice(cell, cell.size))))
    return np.array(medians)


Curve = Sequence[tuple[float, np.ndarray]]
"""An arm's curve: ``(dose, replicate values)`` cells."""


def dose_ratio(first: Curve, second: Curve, threshold: float, *, confidence: float = CONFIDENCE,
               resamples: int = RATIO_RESAMPLES, seed: int = 0) -> DoseRatio:
    """The dose ratio ``first / second`` at which two arms' median curves reach ``threshold``.

    Args:
        first, second: each arm's curve as ``(dose, replicate values)`` cells (finite values
            of a higher-is-better metric), any order.
        threshold: the quality both must reach (in the metric's units).
        confidence: of the percentile interval over resamples.
        resamples: bootstrap resamples; each draws every cell's replicates with replacement.
        seed: of the resampling.
    """
    curves = []
    for arm in (first, second):
        ordered = sorted(arm, key=lambda cell: cell[0])
        doses = np.array([dose for dose, _ in ordered], float)
        cells = [np.asarray(values, float)[np.isfinite(values)] for _, values in ordered]
        curves.append((doses, cells))

    def log_ratio(rng: np.random.Generator | None) -> float:
        """NaN unless both arms cross inside their measured doses: a crossing at the lowest
        dose is only an upper bound on the dose needed, and a ratio of bounds is no ratio."""
        crossings = [crossing_dose(doses, _cell_medians(cells, rng), threshold)
                     for doses, cells in curves]
        if not all(bound == "=" and dose > 0 for dose, bound in crossings):
            return math.nan
        return math.log10(crossings[0][0]) - math.log10(crossings[1][0])

    point = log_ratio(None)
    rng = np.random.default_rng(seed)
    draws = np.array([log_ratio(rng) for _ in range(resamples)])
    finite = draws[np.isfinite(draws)]
    reached = finite.size / resamples
    single = all(cell.size < 2 for _, cells in curves for cell in cells)
    if not math.isfinite(point) or single or reached < MIN_REACHED:
        # no interval: a percentile interval over the resamples that happen to cross would
        # pretend to a coverage it does not have
        return DoseRatio(point, math.nan, math.nan, reached, resamples)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return DoseRatio(point, float(low), float(high), reached, resamples)
