"""Training and inference throughput of the PINN, with XLA compile time, per (N, gridsize, XLA).

Each configuration runs in a fresh subprocess, so its first-step compile time and peak RSS are its
own. Figures are medians of per-step times (this VM sometimes stalls a process for 15-40 s).
Each row also gives the generator's forward GFLOP per diffraction pattern (analytic convolution
FLOPs), printed beside the reference network's ≈1.6 GFLOP: at N=64 our network does about half
the arithmetic per pattern, so a lead in patterns/s comes from the smaller network, not from a
faster implementation of the same one. The training step's achieved GFLOP/s (×3 for forward +
backward) is printed beside this machine's measured float32 matmul rate.

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

# The reference PtychoPINN, measured side by side with this project on the same 2-core CPU VM
# while it was otherwise idle: N=64, batch 16 groups, Poisson NLL. (The figures used before,
# 11.7 patterns/s for training, were taken on a contended machine and understated it ~3×.)
REFERENCE_N = 64
REFERENCE = {
    1: {
        "train": 34.0,  # patterns/s (median step 0.47 s for 16 patterns)
        "step_s": 0.47,
        "infer": 49.9,  # patterns/s
        "first_step_s": 17.8,  # trace + compile + first step
        "peak_rss_gb": 1.85,
    },
}
# At gridsize 2 (batch 16) the reference does not train: its whole-batch stitching branch fails.
REFERENCE_G2_ERROR = (
    "Input to reshape is a tensor with 6084 values, but the requested shape has 97344"
)
# Forward FLOPs of the reference network per diffraction pattern at N=64 (published figure).
REFERENCE_GFLOP_PER_PATTERN = 1.6
TARGET_SPEEDUP = 1.25


def conv_flops_per_sample(model) -> float:
    """Forward FLOPs of every Conv2D in ``model`` (nested models included), per sample.

    Counted analytically from the layers' static shapes, ``2·H·W·kh·kw·C_in·C_out`` per conv (a
    multiply-add is 2 FLOPs). Chosen over ``tf.compat.v1.profiler`` because it needs no frozen
    v1 graph and no deprecated API, and cannot silently count 0 for an op without registered
    FLOP statistics. Cross-checked once: the profiler (``ProfileOptionBuilder.float_operation()``
    on the frozen graph of a ``tf.function`` of the inference model) gives 0.801 GFLOP at N=64
    and 0.998 at N=128 against 0.800 and 0.996 here; the difference is bias adds and
    activations. Pooling, upsampling and the physics head (FFT, overlap matmuls) are not counted.
    """
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
    from ptycho.arms.pinn import build
    from ptycho.config import DataConfig, TrainConfig, validate
    from ptycho.data import SimulationSpec, canvas_size, group_positions, make_datasets
    from ptycho.models import compute_input_scale, model_inputs, pinn_targets
    from ptycho.reconstruction.predict import predict
    from ptycho.training import fit

    runtime.configure_devices()
    runtime.reset(0)
    n_train = batch * steps
    # The object's size defaults to 2·N.
    pair = make_datasets(
        SimulationSpec(N=N, dose=1e6, seed=0, data=DataConfig(n_train=n_train))
    )
    train = pair.train
    groups = group_positions(train.positions, gridsize, seed=0)
    models = build(validate({"N": N, "gridsize": gridsize}), train.scan,
                   canvas_size(groups.offsets, N))  # the schema's default network
    inputs = model_inputs(train.scan, groups, compute_input_scale(train.counts))
    result = fit(models.train, inputs, pinn_targets(train.scan, groups), loss="poisson_nll",
                 settings=TrainConfig(epochs=1, batch_size=batch, validation_fraction=0.0),
                 jit_compile=jit, seed=0)

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
    forward = conv_flops_per_sample(models.train)  # per group of C patterns
    generator = conv_flops_per_sample(models.inference)  # the network alone, per group
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
        "forward_gflop_per_pattern": generator / channels / 1e9,
        "train_gflops": 3.0 * forward * batch / result.step_time_s / 1e9,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "devices": runtime.describe_devices(),
    }


def _table(rows: list[dict], matmul: float) -> str:
    header = (
        f"{'N':>4} {'g':>2} {'XLA':>4} | {'train pat/s':>11} {'vs ref':>6} | "
        f"{'infer pat/s':>11} {'vs ref':>6} | {'1st step s':>10} {'compile s':>9} "
        f"{'step ms':>8} | {'GFLOP/pat':>9} | {'GFLOP/s':>7} {'of mm':>6} | {'RSS MB':>7}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        comparable = row["N"] == REFERENCE_N and row["batch_groups"] == 16
        ref = REFERENCE.get(row["gridsize"]) if comparable else None
        train_ratio = f"{row['train_patterns_per_s'] / ref['train']:.2f}x" if ref else "-"
        infer_ratio = f"{row['infer_patterns_per_s'] / ref['infer']:.2f}x" if ref else "-"
        if comparable and row["gridsize"] == 2:
            train_ratio = "fails"  # the reference cannot train here: see the footer
        xla = "on" if row["xla_used"] else ("off" if not row["jit_compile"] else "OFF!")
        lines.append(
            f"{row['N']:>4} {row['gridsize']:>2} {xla:>4} | "
            f"{row['train_patterns_per_s']:>11.1f} {train_ratio:>6} | "
            f"{row['infer_patterns_per_s']:>11.1f} {infer_ratio:>6} | "
            f"{row['first_step_s']:>10.2f} {row['compile_s']:>9.2f} "
            f"{1000 * row['train_step_median_s']:>8.1f} | "
            f"{row['forward_gflop_per_pattern']:>9.2f} | "
            f"{row['train_gflops']:>7.1f} {row['train_gflops'] / matmul:>6.0%} | "
            f"{row['peak_rss_mb']:>7.0f}"
        )
    ref = REFERENCE[1]
    lines += [
        "",
        f"float32 matmul rate of this device: {matmul:.1f} GFLOP/s (2048², median of 8)",
        "GFLOP/pat: our generator's forward pass per diffraction pattern (analytic conv FLOPs); "
        f"the reference network: ≈{REFERENCE_GFLOP_PER_PATTERN} GFLOP per pattern at N=64",
        f"reference (N={REFERENCE_N}, g=1, batch 16, this VM idle, side by side): train "
        f"{ref['train']} patterns/s (median step {ref['step_s']} s), infer {ref['infer']}/s, "
        f"first step {ref['first_step_s']} s, peak RSS {ref['peak_rss_gb']} GB",
        f"reference at g=2, batch 16: fails ({REFERENCE_G2_ERROR})",
        f"targets: train ≥{TARGET_SPEEDUP}x the reference, first step ≤10 s, RSS ≤2 GB",
    ]
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
         "steps": steps, "reference": REFERENCE, "reference_g2_error": REFERENCE_G2_ERROR,
         "reference_gflop_per_pattern": REFERENCE_GFLOP_PER_PATTERN}, indent=2))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
