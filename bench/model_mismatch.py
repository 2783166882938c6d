"""How far the reconstructors' forward model is from the exact simulator's, in units of noise.

A scan (the quickstart's: N=32, the lines object, 512 positions, or as given) is simulated
without noise by the exact simulator, and the reconstructors' model (bilinear shifts, pixel
centres; ``ptycho.physics.Ptychography``) is applied to the truth it is scored against (the
exact object's block average, with the block-averaged probe), both scaled to the dose. The
expected excess χ² one pattern's counts would show under the model is the variance-stabilised
``4·Σ(√λ_exact − √λ_model)²`` (≈ Σ(Δλ)²/λ, finite on dark pixels): it grows in proportion to
the dose; pure Poisson noise gives about one per pixel, so where the excess passes the pixel
count the model, not the photons, limits any fit made with it. Three variants separate the
causes: everything (K=4, L=3), the finer object and exact shifts alone (K=4, L=1), and the
detector pixels' integration alone (K=1, L=3).

    python bench/model_mismatch.py                                  # table + figure
    python bench/model_mismatch.py --N 64 --positions 2048 --size 192 --out mismatch64.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--N", type=int, default=32)
    parser.add_argument("--positions", type=int, default=512)
    parser.add_argument("--size", type=int, default=None, help="object side (default 2N)")
    parser.add_argument("--kind", default="lines", help="object class (lines, grf, …)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="model_mismatch.png")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from ptycho import physics, viz
    from ptycho.config import validate
    from ptycho.data import make_object, make_positions, make_probe

    data = validate({"N": args.N, "data": {"n_train": args.positions, "object": {
        "kind": args.kind, **({"size": args.size} if args.size else {})}}}).data
    doses = [10.0**e for e in range(2, 10)]
    curves = {}
    for label, K, L in (("exact (K=4, L=3)", 4, 3), ("finer object, exact shifts (K=4, L=1)", 4, 1),
                        ("detector pixels integrated (K=1, L=3)", 1, 3)):
        fine_obj = make_object(data.object, args.seed, K)
        fine_probe = make_probe(data.probe, args.N, K)
        obj = physics.block_average(fine_obj, K)
        probe = physics.block_average(fine_probe, K)
        positions = make_positions(data.scan, args.positions, obj.shape, args.N, seed=args.seed)
        exact = physics.exact_intensities(fine_obj, fine_probe, positions, N=args.N,
                                          oversampling=K, pixel_subsamples=L)
        model = physics.Ptychography(probe, positions, obj.shape).intensities(obj).numpy()
        per_pattern = []
        for dose in doses:
            lam_exact = physics.expected_counts(exact, physics.dose_scale(exact, dose)).numpy()
            lam_model = physics.expected_counts(model, physics.dose_scale(model, dose)).numpy()
            excess = 4 * ((np.sqrt(lam_exact.astype(np.float64))
                           - np.sqrt(lam_model.astype(np.float64))) ** 2).sum(axis=(1, 2))
            per_pattern.append(float(excess.mean()))
        curves[label] = per_pattern
    noise = float(args.N**2)
    print(f"N={args.N}, {args.positions} positions, {args.kind} object (seed {args.seed}): "
          f"expected excess χ² per pattern under the reconstructors' model (noise: {noise:g})")
    print(f"{'dose':>8} " + " ".join(f"{label[:26]:>27}" for label in curves))
    for i, dose in enumerate(doses):
        print(f"{dose:>8.0e} " + " ".join(f"{values[i]:>27.4g}" for values in curves.values()))
    for label, values in curves.items():
        crossing = doses[0] * noise / values[0]  # the excess is proportional to the dose
        print(f"{label}: reaches the noise χ² at dose {crossing:.3g}")
    viz.mismatch_figure(doses, curves, noise,
                        title=f"model mismatch, N={args.N} {args.kind}").savefig(args.out, dpi=100)
    print(f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
