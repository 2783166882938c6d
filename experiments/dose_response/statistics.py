"""Statistics over a study's replicates: intervals of medians (a bootstrap from
:data:`MIN_BOOTSTRAP` replicates on, labelled with the coverage it was measured to have at that
n; the range below), paired differences between two arms over shared seeds (a seed-level
bootstrap, the sign test and Wilcoxon's signed-rank test), and the dose ratio at which two arms
reach one quality.

The bootstrap is ``scipy.stats.bootstrap`` (bias-corrected and accelerated, BCa; the percentile
method where BCa is undefined, e.g. two replicates or all values equal). The dose-ratio interval
is a percentile bootstrap written here, because it resamples each (arm, dose) cell's replicates
independently and recomputes a threshold crossing from the resampled medians, which is not a
statistic of one sample that ``scipy.stats.bootstrap`` could take.
"""

from __future__ import annotations

import math
import typing
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "CONFIDENCE",
    "MEAN_COVERAGE",
    "MEDIAN_COVERAGE",
    "MIN_BOOTSTRAP",
    "MIN_REACHED",
    "RATIO_RESAMPLES",
    "RESAMPLES",
    "DoseRatio",
    "PairedDifference",
    "crossing_dose",
    "dose_ratio",
    "interval_label",
    "median_ci",
    "median_interval",
    "paired_difference",
]

CONFIDENCE = 0.95
RESAMPLES = 2000
"""Bootstrap resamples of each median's interval."""
RATIO_RESAMPLES = 1000
"""Bootstrap resamples of a dose ratio (each recomputes every cell's median)."""
MIN_BOOTSTRAP = 5
"""Below this many replicates (or paired seeds) no bootstrap interval is given: the range of
the values is drawn and called a range (a bootstrap of 2 values is their range, and covers
the median about half the time)."""
MEDIAN_COVERAGE = {5: 0.94, 6: 0.93, 8: 0.91, 10: 0.93, 12: 0.93}
"""Measured coverage of :func:`median_ci`'s nominal 95% interval by replicates n (a skewed
distribution with a known median, 2000 studies each, ±0.006; ``python
bench/interval_coverage.py``)."""
MEAN_COVERAGE = {5: 0.84, 6: 0.87, 8: 0.87, 10: 0.91, 12: 0.90}
"""Measured coverage of :func:`paired_difference`'s nominal 95% seed-level bootstrap of the
mean difference by paired seeds n (normal differences, 2000 studies each, ±0.008; the same
script): a bootstrap of a mean from a few seeds is too narrow."""
MIN_REACHED = 0.95
"""A dose ratio gets an interval only when both arms cross the threshold (inside their measured
doses) in at least this fraction of the resamples."""


def median_ci(values: Sequence[float] | np.ndarray, *, confidence: float = CONFIDENCE,
              resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Bootstrap ``confidence`` interval of the median of ``values`` (finite ones only).

    One value: ``(nan, nan)`` (no spread to resample). All values equal: that value twice.
    BCa where it is defined, else the percentile interval. Below about 5 replicates a
    bootstrap interval of a median is too narrow (measured coverage of a nominal 95% interval:
    0.78 at n=3; from 5 on :data:`MEDIAN_COVERAGE`): the report uses :func:`median_interval`.
    """
    data = np.asarray(values, np.float64)
    data = data[np.isfinite(data)]
    if data.size < 2:
        return math.nan, math.nan
    if np.all(data == data[0]):
        return float(data[0]), float(data[0])
    return _bootstrap(data, np.median, seed, resamples, confidence)


def interval_label(n: int, coverage: dict[int, float]) -> str:
    """What an interval of ``n`` values is: ``range`` below :data:`MIN_BOOTSTRAP`, else
    ``bootstrap 95% (measured coverage 0.91 at n=5)`` (the measured n at or below ``n``)."""
    if n < MIN_BOOTSTRAP:
        return "range"
    measured = max(key for key in coverage if key <= n)
    return (f"bootstrap {CONFIDENCE:.0%} (measured coverage {coverage[measured]:.2f} "
            f"at n={measured})")


def median_interval(values: Sequence[float] | np.ndarray, *, seed: int = 0,
                    resamples: int = RESAMPLES) -> tuple[float, float, str]:
    """``(low, high, label)``: the bootstrap interval of the median from :data:`MIN_BOOTSTRAP`
    finite values on, else their range (NaN for none), with :func:`interval_label`."""
    data = np.asarray(values, np.float64)
    data = data[np.isfinite(data)]
    label = interval_label(data.size, MEDIAN_COVERAGE)
    if data.size == 0:
        return math.nan, math.nan, label
    if data.size < MIN_BOOTSTRAP:
        return float(data.min()), float(data.max()), label
    return (*median_ci(data, resamples=resamples, seed=seed), label)


@dataclass(frozen=True)
class PairedDifference:
    """Arm ``a`` minus arm ``b`` in one metric over the seeds both ran (each seed's scan,
    object and weights shared by the two; its replicates averaged).

    Attributes:
        n: seeds where both runs scored (non-degenerate finished runs).
        mean: mean over those seeds of the per-seed difference ``a − b``.
        low, high: the seed-level bootstrap interval of ``mean`` from :data:`MIN_BOOTSTRAP`
            seeds on, else the range of the differences; ``label`` says which.
        a_wins, b_wins, ties: seeds each arm is better on (by ``higher_is_better``), a failed
            or degenerate run losing to a scored one; seeds where both failed are not counted.
        a_failed, b_failed: seeds where only that arm failed or collapsed.
        sign_p: two-sided sign test of ``a_wins`` against ``b_wins`` (binomial, ties dropped).
        wilcoxon_p: two-sided exact Wilcoxon signed-rank test of the per-seed differences, a
            failure ranked as the largest loss; NaN below 2 untied seeds.
    """

    n: int
    mean: float
    low: float
    high: float
    label: str
    a_wins: int
    b_wins: int
    ties: int
    a_failed: int
    b_failed: int
    sign_p: float
    wilcoxon_p: float

    @property
    def winner(self) -> str:
        """``a`` or ``b`` where one wins more seeds with sign-test p < 0.05, else ``""``."""
        if self.sign_p < 0.05 and self.a_wins != self.b_wins:
            return "a" if self.a_wins > self.b_wins else "b"
        return ""


def paired_difference(a: typing.Mapping[object, float], b: typing.Mapping[object, float], *,
                      higher_is_better: bool, seed: int = 0,
                      resamples: int = RESAMPLES) -> PairedDifference:
    """The paired difference of two arms over their shared seeds.

    Args:
        a, b: each arm's value by seed (its replicates of that seed already averaged); NaN
            for a run that failed or collapsed. Seeds present in only one are ignored.
        higher_is_better: the metric's direction (SSIM, FRC: True; MSE, NRMSE: False).
        seed, resamples: of the bootstrap, which resamples whole seeds (the per-seed
            differences) with ``scipy.stats.bootstrap`` (BCa, percentile where undefined).
    """
    shared = [key for key in a if key in b]
    first = np.array([a[key] for key in shared], float)
    second = np.array([b[key] for key in shared], float)
    scored = np.isfinite(first) & np.isfinite(second)
    a_failed = int(np.sum(~np.isfinite(first) & np.isfinite(second)))
    b_failed = int(np.sum(np.isfinite(first) & ~np.isfinite(second)))
    difference = first[scored] - second[scored]
    better = difference if higher_is_better else -difference  # > 0: a is better
    a_wins, b_wins = int(np.sum(better > 0)) + b_failed, int(np.sum(better < 0)) + a_failed
    ties = int(np.sum(better == 0))
    n = difference.size
    label = interval_label(n, MEAN_COVERAGE)
    mean = float(difference.mean()) if n else math.nan
    if n == 0:
        low = high = math.nan
    elif n < MIN_BOOTSTRAP or np.all(difference == difference[0]):
        low, high = float(difference.min()), float(difference.max())
    else:
        low, high = _bootstrap(difference, np.mean, seed, resamples)
    decided = a_wins + b_wins
    sign_p = (float(stats.binomtest(a_wins, decided, 0.5).pvalue) if decided else math.nan)
    # a failure takes the largest rank, as a loss (sign: the direction the winner's metric moves)
    largest = float(np.abs(better).max()) + 1.0 if n else 1.0
    ranked = np.concatenate([better[better != 0], np.full(b_failed, largest),
                             np.full(a_failed, -largest)])
    wilcoxon_p = (float(stats.wilcoxon(ranked, method="exact").pvalue) if ranked.size >= 2
                  else math.nan)
    return PairedDifference(n, mean, low, high, label, a_wins, b_wins, ties, a_failed,
                            b_failed, sign_p, wilcoxon_p)


def _bootstrap(data: np.ndarray, statistic: typing.Callable, seed: int, resamples: int,
               confidence: float = CONFIDENCE) -> tuple[float, float]:
    """``scipy.stats.bootstrap``'s interval, BCa where defined, else the percentile one."""
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's degenerate-data warning: fall back below
            result = stats.bootstrap((data,), statistic, confidence_level=confidence,
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
