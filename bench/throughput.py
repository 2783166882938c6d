"""Training and inference throughput of the PINN, with XLA compile time, per (N, gridsize, XLA).

Each configuration runs in a fresh subprocess, so its first-step compile time and peak RSS are its
own. Figures are medians of per-step times (this VM sometimes stalls a process for 15-40 s).
The training step's achieved GFLOP/s (analytic convolution FLOPs, ×3 for forward + backward) is
printed beside this machine's measured float32 matmul rate.

    python bench/throughput.py            # N ∈ {64, 128} × g ∈ {1, 2} × XLA on/off, 20 steps
    python bench/throughput.py --quick    # same grid, 6 steps each (a few minutes on 2 cores)

Runs unchanged on a GPU (TensorFlow places everything there). Writes a table and JSON
(``--out``, default ``bench/results/throughput.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

# The reference PtychoPINN on this project's 2-core CPU VM: N=64, batch 16 groups, Poisson NLL.
REFERENCE = {
    1: {"train": 11.7, "infer": 49.5, "first_step_s": 40.0},
    2: {"train": 43.9, "infer": 160.0, "first_step_s": 40.0},
}
TARGET_SPEEDUP = 1.25


def conv_flops_per_sample(model) -> float:
    """Forward FLOPs of every Conv2D in ``model`` (nested models included), per sample."""
    import keras

    total = 0.0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            in_channels = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            total += 2.0 * height * width * kh * kw * in_channels * out_channels
    return total


def matmul_gflops(size: int = 2048, repeats: int = 8) -> float:
    """Measured float32 matmul rate of this device, GFLOP/s (median of ``repeats``)."""
    import numpy as np
    import tensorflow as tf

    a = tf.random.stateless_normal((size, size), seed=(1, 2))
    b = tf.random.stateless_normal((size, size), seed=(3, 4))
    product = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    float(product(a, b))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        float(product(a, b))
        times.append(time.perf_counter() - start)
    return 2.0 * size**3 / float(np.median(times)) / 1e9


def run_one(N: int, gridsize: int, jit: bool, steps: int, batch: int) -> dict:
    """Measure one configuration in this process (called in a fresh subprocess)."""
    import keras
    import numpy as np

    from ptycho import runtime
    from ptycho.data import ObjectSpec, SimulationSpec, canvas_size, group_positions, make_datasets
    from ptycho.models import (
        build_pinn,
        compute_input_scale,
        initial_log_scale,
        model_inputs,
        pinn_targets,
    )
    from ptycho.training import fit, predict

    runtime.configure_devices()
    runtime.reset(0)
    n_train = batch * steps
    pair = make_datasets(
        SimulationSpec(N=N, dose=1e6, n_train=n_train, n_test=batch,
                       obj=ObjectSpec(size=2 * N))
    )
    train = pair.train
    groups = group_positions(train.positions, gridsize)
    models = build_pinn(
        N=N,
        gridsize=gridsize,
        probe=train.probe,
        canvas_size=canvas_size(groups.offsets, N),
        log_scale=initial_log_scale(train.measured_dose, train.probe),
    )
    inputs = model_inputs(train, groups, compute_input_scale(train.counts))
    result = fit(models.train, inputs, pinn_targets(train, groups), loss="poisson_nll",
                 epochs=1, batch_size=batch, validation_fraction=0.0, jit_compile=jit)

    class BatchTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_predict_batch_begin(self, index, logs=None):
            self.start = time.perf_counter()

        def on_predict_batch_end(self, index, logs=None):
            self.times.append(time.perf_counter() - self.start)

    predict(models.inference, inputs, batch_size=batch, jit_compile=jit)  # compile
    timer = BatchTimer()
    feed = inputs["diffraction"]
    for _ in range(2):
        models.inference.predict(feed, batch_size=batch, verbose=0, callbacks=[timer])
    infer_step = float(np.median(timer.times[1:] or timer.times))
    channels = gridsize**2
    forward = conv_flops_per_sample(models.train)
    return {
        "N": N,
        "gridsize": gridsize,
        "jit_compile": jit,
        "xla_used": result.xla,
        "batch_groups": batch,
        "steps": len(result.step_times_s),
        "params": models.params_count,
        "first_step_s": result.step_times_s[0],
        "compile_s": result.compile_time_s,
        "train_step_median_s": result.step_time_s,
        "train_patterns_per_s": batch * channels / result.step_time_s,
        "infer_batch_median_s": infer_step,
        "infer_patterns_per_s": batch * channels / infer_step,
        "forward_gflop_per_group": forward / 1e9,
        "train_gflops": 3.0 * forward * batch / result.step_time_s / 1e9,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "devices": runtime.describe_devices(),
    }


def _table(rows: list[dict], matmul: float) -> str:
    header = (
        f"{'N':>4} {'g':>2} {'XLA':>4} | {'train pat/s':>11} {'vs ref':>6} | "
        f"{'infer pat/s':>11} {'vs ref':>6} | {'1st step s':>10} {'compile s':>9} "
        f"{'step ms':>8} | {'GFLOP/s':>7} {'of mm':>6} | {'RSS MB':>7}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        ref = REFERENCE.get(row["gridsize"]) if row["N"] == 64 else None
        train_ratio = f"{row['train_patterns_per_s'] / ref['train']:.2f}x" if ref else "-"
        infer_ratio = f"{row['infer_patterns_per_s'] / ref['infer']:.2f}x" if ref else "-"
        xla = "on" if row["xla_used"] else ("off" if not row["jit_compile"] else "OFF!")
        lines.append(
            f"{row['N']:>4} {row['gridsize']:>2} {xla:>4} | "
            f"{row['train_patterns_per_s']:>11.1f} {train_ratio:>6} | "
            f"{row['infer_patterns_per_s']:>11.1f} {infer_ratio:>6} | "
            f"{row['first_step_s']:>10.2f} {row['compile_s']:>9.2f} "
            f"{1000 * row['train_step_median_s']:>8.1f} | "
            f"{row['train_gflops']:>7.1f} {row['train_gflops'] / matmul:>6.0%} | "
            f"{row['peak_rss_mb']:>7.0f}"
        )
    lines.append("")
    lines.append(f"float32 matmul rate of this device: {matmul:.1f} GFLOP/s (2048², median of 8)")
    lines.append(
        "reference (N=64, batch 16, this CPU): train 11.7 / 43.9 patterns/s (g=1 / g=2), infer "
        f"49.5 / 160, first step ≈40 s, RSS 2.0-2.3 GB; target ≥{TARGET_SPEEDUP}x, first step "
        "≤10 s, RSS ≤2 GB"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 training steps per config")
    parser.add_argument("--steps", type=int, default=None, help="training steps per config")
    parser.add_argument("--batch", type=int, default=16, help="groups per batch (default 16)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--gridsizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--xla", choices=["on", "off", "both"], default="both")
    parser.add_argument("--out", type=Path, default=Path("bench/results/throughput.json"))
    parser.add_argument("--one", nargs=3, type=int, metavar=("N", "G", "JIT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.steps or (6 if args.quick else 20)

    if args.one:
        N, gridsize, jit = args.one
        print(json.dumps(run_one(N, gridsize, bool(jit), steps, args.batch)))
        return 0

    modes = {"on": [True], "off": [False], "both": [True, False]}[args.xla]
    rows = []
    for N in args.sizes:
        for gridsize in args.gridsizes:
            for jit in modes:
                print(f"measuring N={N} gridsize={gridsize} XLA={'on' if jit else 'off'} "
                      f"({steps} steps) ...", file=sys.stderr, flush=True)
                command = [sys.executable, __file__, "--one", str(N), str(gridsize),
                           str(int(jit)), "--steps", str(steps), "--batch", str(args.batch)]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(done.stderr[-3000:], file=sys.stderr)
                    return done.returncode
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    matmul = float(subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
         "import throughput; print(throughput.matmul_gflops())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1])
    table = _table(rows, matmul)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(
        {"rows": rows, "matmul_gflops": matmul, "host": platform.node(),
         "steps": steps, "reference": REFERENCE}, indent=2))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
