"""How often the report's nominal 95% intervals cover the truth, by number of replicates.

Two intervals, each on simulated studies with a known answer:

- the median's bootstrap (``median_ci``): replicates ``0.7 − Exponential(0.05)`` (skewed, like
  an SSIM near its ceiling), true median ``0.7 − 0.05·ln 2``;
- the paired difference's seed-level bootstrap of the mean (``paired_difference``): per-seed
  differences ``Normal(0.02, 0.03)``, true mean 0.02.

Prints the coverage (and its binomial standard error) per n; the report labels its intervals
with these numbers (``statistics.MEDIAN_COVERAGE``, ``statistics.MEAN_COVERAGE``).

    python bench/interval_coverage.py                    # n = 5, 6, 8, 10, 12; 2000 studies
    python bench/interval_coverage.py --n 5 --studies 500
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", nargs="+", type=int, default=[5, 6, 8, 10, 12])
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=999)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from experiments.dose_response.statistics import median_ci, paired_difference

    true_median, true_mean = 0.7 - 0.05 * math.log(2), 0.02
    print(f"{'n':>3} {'median coverage':>16} {'mean-difference coverage':>25}   seconds")
    for n in args.n:
        start = time.perf_counter()
        rng = np.random.default_rng(n)
        median_hits = mean_hits = 0
        for study in range(args.studies):
            low, high = median_ci(0.7 - rng.exponential(0.05, n), resamples=args.resamples,
                                  seed=study)
            median_hits += low <= true_median <= high
            differences = rng.normal(true_mean, 0.03, n)
            paired = paired_difference(dict(enumerate(differences)), dict.fromkeys(range(n), 0.0),
                                       higher_is_better=True, seed=study,
                                       resamples=args.resamples)
            mean_hits += paired.low <= true_mean <= paired.high
        cells = []
        for hits in (median_hits, mean_hits):
            p = hits / args.studies
            cells.append(f"{p:.3f} ± {math.sqrt(p * (1 - p) / args.studies):.3f}")
        print(f"{n:>3} {cells[0]:>16} {cells[1]:>25}   {time.perf_counter() - start:7.1f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
