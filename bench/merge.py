"""How much the overlap constraint changes true patches, in units of Poisson noise.

Patches cut from the lines object at a jittered sub-pixel raster (the job's data) are grouped
(gridsize g), merged on the overlap canvas and re-cut. The change is scored as the excess χ² per
detector pixel the merged patches would add to a perfect fit at a dose, using the
variance-stabilised form ``4·Σ(√λ_merged − √λ_true)² / N²`` (equal to ``Σ(Δλ)²/λ / N²`` for small
changes, finite on dark pixels). Pure Poisson noise gives 1 per pixel, so where the excess passes
1 the merge, not the photons, limits the fit. The excess grows in proportion to the dose; the
table gives it at each dose and the dose where it reaches 1.

Compared: ``before`` (wave 1: group centre at the mean position, normalised overlap-add),
``overlap-add`` (centre on a whole pixel, no iterations) and the least-squares merge with
``model.merge_iterations`` steps.

    python bench/merge.py                       # N=32 and 64, g=2 and 3, 256 positions
    python bench/merge.py --N 64 --gridsize 2 --iterations 4 8 16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--N", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--gridsize", nargs="+", type=int, default=[2, 3])
    parser.add_argument("--iterations", nargs="+", type=int, default=[8])
    parser.add_argument("--positions", type=int, default=256)
    parser.add_argument("--doses", nargs="+", type=float, default=[1e4, 1e6, 1e8, 1e9])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from ptycho import physics
    from ptycho.config import DataConfig, ObjectConfig
    from ptycho.data import SimulationSpec, canvas_size, group_positions, make_datasets

    doses = args.doses
    print(f"{'N':>3} {'g':>2} {'merge':>14} | {'rel. change':>11} | "
          + " ".join(f"{f'χ²/px @{d:.0e}':>13}" for d in doses) + f" | {'χ²/px = 1 at':>12}")
    for N in args.N:
        data = make_datasets(SimulationSpec(N=N, dose=1.0, seed=0, data=DataConfig(
            object=ObjectConfig(size=3 * N), n_train=args.positions))).train
        # Expected counts at dose D are D/dose_1 times those at the simulated scale.
        unit = physics.expected_counts_at_dose(data.patches, data.probe, 1.0).numpy()
        scale = float(unit.sum(axis=(1, 2)).mean())
        for gridsize in args.gridsize:
            groups = group_positions(data.positions, gridsize, seed=0)
            members = data.positions[groups.indices]
            patches = data.patches[groups.indices]
            cases = [("before", members - members.mean(axis=1, keepdims=True), 0),
                     ("overlap-add", groups.offsets, 0)]
            cases += [(f"least sq. {k}", groups.offsets, k) for k in args.iterations]
            for name, offsets, iterations in cases:
                side = canvas_size(np.asarray(offsets, np.float32), N)
                positions = np.asarray(offsets, np.float32) + side / 2
                canvas = physics.merge_patches(patches, positions, (side, side), iterations)
                merged = physics.extract_patches(canvas, positions, N).numpy()
                change = np.linalg.norm(data.probe * (merged - patches)) / np.linalg.norm(
                    data.probe * patches)
                flat = merged.reshape(-1, N, N)
                lam = physics.expected_counts_at_dose(flat, data.probe, 1.0).numpy() / scale
                ref = unit[groups.indices].reshape(-1, N, N) / scale
                per_photon = 4 * np.mean(np.sum((np.sqrt(lam) - np.sqrt(ref)) ** 2, axis=(1, 2)))
                excess = [per_photon * dose / N**2 for dose in doses]
                print(f"{N:>3} {gridsize:>2} {name:>14} | {change:>11.2e} | "
                      + " ".join(f"{value:>13.3g}" for value in excess)
                      + f" | {N**2 / per_photon:>12.3g}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
