"""The whole GPU check in one command, within a time limit: training throughput with XLA
(N=64/128 × g=1/2), one quickstart study, and the Cramér–Rao bound of one N=128 scan.

Written for the day a device is lent (one short, prepared run), and runnable on this CPU VM
with ``--cpu`` (smaller sizes, so the script itself is tested by ``tests/test_gpu_check.py``):

    python bench/gpu_check.py                     # on the GPU machine: the full check, 540 s
    python bench/gpu_check.py --cpu               # here: N=16 throughput, a 2-job study,
                                                  #   the bound of an N=16 scan (~1.5 min)
    python bench/gpu_check.py --time-limit 300    # stop starting steps once 300 s are spent

Each step runs in a fresh subprocess with what is left of the time limit as its own timeout,
so one slow step cannot take the others' time; a step that does not fit is reported as
skipped, not silently dropped. Prints a table and writes JSON (``--out``, default
``bench/results/gpu_check.json``) with the device TensorFlow saw, each step's wall time, exit
code and figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (throughput sizes, gridsizes, steps), the study's overrides and the bound's N, per mode.
FULL = {
    "throughput": ["--sizes", "64", "128", "--gridsizes", "1", "2", "--xla", "on",
                   "--steps", "20"],
    "study": ["experiment=quickstart"],
    "bound_N": 128,
}
CPU = {
    "throughput": ["--sizes", "16", "--gridsizes", "1", "2", "--xla", "on", "--steps", "3",
                   "--batch", "8"],
    "study": ["experiment=quickstart", "N=16", "gridsize=1", "data.n_train=64",
              "data.object.size=48", "train.epochs=1", "model.iterations=5", "dose=1e4",
              "seed=0", "model=pinn,lsqml", "eval.crb=true"],
    "bound_N": 16,
}

BOUND = """
import json, sys, time
from hydra import compose, initialize_config_dir
from ptycho.config import validate
from ptycho.data.simulation import load_or_simulate
from ptycho.evaluation.alignment import scanned_region
from ptycho.evaluation.limit import estimate_limit
from ptycho.pipeline import simulation_spec
from ptycho.reconstruction.stitch import scan_weight
from ptycho.runner.sweep import register_configs

register_configs()
with initialize_config_dir(config_dir=sys.argv[1], version_base=None):
    job = validate(compose(config_name="config", overrides=sys.argv[2:]))
start = time.perf_counter()
pair, _ = load_or_simulate(simulation_spec(job), None)
simulated = time.perf_counter() - start
scan = pair.test
coverage = scan_weight(scan.positions, job.N, scan.obj.shape, keep_fraction=job.eval.keep_fraction)
region = scanned_region(coverage, job.eval.border)
limit = estimate_limit(scan.obj, scan.probe, scan.positions, region,
                       phase_alignment=str(job.eval.phase_alignment),
                       samples=job.eval.crb_samples)
print("RESULT " + json.dumps({
    "N": job.N, "patterns": len(scan.positions), "object": list(scan.obj.shape),
    "simulate_s": round(simulated, 2), "bound_s": round(limit.seconds, 2),
    "method": limit.method, "probes": limit.samples, "cg_iterations": limit.cg_iterations,
    "free_pixels": limit.free_pixels, "amp_mse_crb": limit.amp_mse,
    "amp_stderr": limit.amp_mse_stderr, "phase_mse_crb": limit.phase_mse,
    "phase_stderr": limit.phase_mse_stderr}))
"""

DEVICE = """
import json, tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
details = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
print("RESULT " + json.dumps({"tensorflow": tf.__version__, "gpus": details}))
"""


def _run(name: str, command: list[str], deadline: float, env: dict[str, str]) -> dict:
    """One step in a fresh subprocess, with the time left as its timeout; its ``RESULT`` lines
    (JSON) are its figures."""
    left = deadline - time.monotonic()
    if left < 10:
        print(f"[{name}] skipped: {left:.0f} s left of the time limit", flush=True)
        return {"step": name, "status": "skipped", "seconds": 0.0}
    print(f"[{name}] {' '.join(command)} (at most {left:.0f} s)", flush=True)
    start = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=left, check=False)
        output, code = done.stdout + done.stderr, done.returncode
        status = "ok" if code == 0 else "failed"
    except subprocess.TimeoutExpired as expired:
        output = ((expired.stdout or b"").decode(errors="replace") if isinstance(
            expired.stdout, bytes) else (expired.stdout or ""))
        code, status = None, "timed out"
    seconds = time.monotonic() - start
    results = [json.loads(line[len("RESULT "):]) for line in output.splitlines()
               if line.startswith("RESULT ")]
    print(f"[{name}] {status} in {seconds:.0f} s", flush=True)
    if status != "ok":
        print("\n".join(output.splitlines()[-15:]), flush=True)
    return {"step": name, "status": status, "exit_code": code, "seconds": round(seconds, 1),
            "results": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="small sizes for a CPU machine")
    parser.add_argument("--time-limit", type=float, default=540.0,
                        help="seconds for all steps together (default 540)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_check.json"))
    args = parser.parse_args()
    if args.time_limit <= 0:
        parser.error(f"--time-limit must be > 0, got {args.time_limit}")
    plan = CPU if args.cpu else FULL
    deadline = time.monotonic() + args.time_limit
    python = sys.executable
    steps = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        steps.append(_run("device", [python, "-c", DEVICE], deadline, env))
        steps.append(_run("throughput", [
            python, "bench/throughput.py", *plan["throughput"],
            "--out", str(Path(scratch) / "throughput.json")], deadline, env))
        throughput = Path(scratch) / "throughput.json"
        if throughput.is_file():
            steps[-1]["results"] = json.loads(throughput.read_text()).get("rows", [])
        store = Path(scratch) / "mlflow.db"
        steps.append(_run("study", [
            python, "run.py", "-m", *plan["study"], f"tracking.uri=sqlite:///{store}",
            f"tracking.artifact_location={Path(scratch) / 'artifacts'}",
            f"data.cache_dir={Path(scratch) / 'cache'}", "tracking.log_model=false",
            f"hydra.sweep.dir={Path(scratch) / 'sweep'}"], deadline, env))
        steps.append(_run("bound", [
            python, "-c", BOUND, str(ROOT / "conf"), f"N={plan['bound_N']}",
            *(["data.n_train=64", "data.object.size=48"] if args.cpu else [])],
            deadline, env))
    report = {"mode": "cpu" if args.cpu else "full", "time_limit_s": args.time_limit,
              "steps": steps}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\n{'step':<12}{'status':<11}{'seconds':>8}  figures")
    for step in steps:
        figures = "; ".join(json.dumps(r)[:150] for r in step.get("results", [])[:4])
        print(f"{step['step']:<12}{step['status']:<11}{step['seconds']:>8.0f}  {figures}")
    print(f"written: {args.out}")
    return 0 if all(step["status"] == "ok" for step in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
