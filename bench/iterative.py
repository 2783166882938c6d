"""The iterative arms on quickstart-sized data: LSQML (Poisson) and ePIE per dose, side by side.

Each point is ``run_pipeline`` of an iterative job (the same path a tracked job takes, no
MLflow): N=32, a 96-pixel lines object, the quickstart's scan of 512 patterns (design
reconstruct), known probe and positions. Prints amplitude/phase SSIM, amplitude FRC50, the test
NLL per photon and the reconstruction time, and writes ``bench/results/iterative.json``. With 144
patterns one dose and engine took 10-45 s on 2 CPU cores; time grows with the patterns.

    python bench/iterative.py                              # 1e2 1e3 1e4 1e6, lsqml and epie
    python bench/iterative.py --doses 1e2 --iterations 10 30 100 --kinds lsqml
    python bench/iterative.py --N 64 --object-size 128 --n-patterns 128 --doses 1e9  # 1e9 check
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["lsqml", "epie"])
    parser.add_argument("--doses", nargs="+", type=float, default=[1e2, 1e3, 1e4, 1e6])
    parser.add_argument("--iterations", nargs="+", type=int, default=[100])
    parser.add_argument("--N", type=int, default=32)
    parser.add_argument("--object-size", type=int, default=96)
    parser.add_argument("--n-patterns", type=int, default=512,
                        help="patterns of the scan (data.n_train; design reconstruct)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "iterative.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from ptycho.config import validate
    from ptycho.pipeline import run_pipeline

    rows = []
    header = (f"{'engine':>6} {'dose':>8} {'iter':>5} | {'amp SSIM':>8} {'phase SSIM':>10} "
              f"{'amp FRC50':>9} {'test NLL/ph':>11} | {'time s':>7}")
    print(header)
    print("-" * len(header))
    for kind in args.kinds:
        for dose in args.doses:
            for iterations in args.iterations:
                config = validate({
                    "N": args.N, "dose": dose,
                    "data": {"object": {"size": args.object_size}, "n_train": args.n_patterns},
                    "model": {"kind": kind, "iterations": iterations},
                })
                metrics = run_pipeline(config).metrics
                row = {"kind": kind, "dose": dose, "iterations": iterations,
                       **{key: metrics[key] for key in (
                           "amp_ssim", "phase_ssim", "amp_frc50", "phase_frc50",
                           "predicted_nll_per_photon", "time_reconstruct_s")}}
                rows.append(row)
                print(f"{kind:>6} {dose:>8.0e} {iterations:>5} | {row['amp_ssim']:>8.3f} "
                      f"{row['phase_ssim']:>10.3f} {row['amp_frc50']:>9.2f} "
                      f"{row['predicted_nll_per_photon']:>11.4g} | "
                      f"{row['time_reconstruct_s']:>7.1f}",
                      flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
