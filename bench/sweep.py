"""Framework overhead and memory of a sweep: K sequential ``smoke`` jobs in one process.

For each job it prints the wall time of ``run_job``, the time spent in simulate/train/evaluate
(from the job's own metrics), the rest (framework overhead: validation, model building, MLflow,
figures, artifacts), and the process RSS after the job. Targets: overhead < 10 % of a
``quickstart`` job, RSS growth < 50 MB per job after the first.

    python bench/sweep.py            # K=6 jobs against a temporary store
    python bench/sweep.py --jobs 10
    python bench/sweep.py --isolate  # each job in a fresh child process (isolate=true)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    """Current resident set size of this process, MB (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--quickstart-job-s", type=float, default=None,
                        help="duration of one quickstart job for the 10%% target (default: the "
                             "mean time_total_s of the quickstart experiment in the default "
                             "store, when there is one)")
    parser.add_argument("--isolate", action="store_true",
                        help="run each job in a fresh child process, as isolate=true does; the "
                             "overhead then includes the child's start and imports")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON results (default bench/results/sweep[_isolate].json)")
    args = parser.parse_args()
    if args.out is None:
        args.out = ROOT / f"bench/results/sweep{'_isolate' if args.isolate else ''}.json"

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ptycho.runner.isolate import run_job_isolated
    from ptycho.runner.job import run_job
    from ptycho.runner.outcome import JobContext
    from ptycho.runner.sweep import register_configs

    register_configs()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ptycho-bench-") as folder:
        store = Path(folder)
        for index in range(args.jobs):
            overrides = [
                "experiment=smoke", f"seed={index}", "resume=false",
                f"tracking.uri=sqlite:///{store}/mlflow.db", f"data.cache_dir={store}/cache",
            ]
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                cfg = compose(config_name="config", overrides=overrides)
            context = JobContext(project_root=ROOT, output_dir=store / f"job{index}",
                                 job_index=index, job_total=args.jobs)
            start = time.perf_counter()
            if args.isolate:
                plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
                outcome = run_job_isolated(plain, context)
            else:
                outcome = run_job(cfg, context)
            wall = time.perf_counter() - start
            if outcome.status != "FINISHED":
                print(f"job {index} {outcome.status}: {outcome.error}", file=sys.stderr)
                return 1
            m = outcome.metrics
            work = m["time_simulate_s"] + m["time_train_s"] + m["time_eval_s"]
            rows.append({"job": index, "wall_s": wall, "simulate_s": m["time_simulate_s"],
                         "train_s": m["time_train_s"], "eval_s": m["time_eval_s"],
                         "overhead_s": wall - work, "rss_mb": rss_mb()})

    quickstart = args.quickstart_job_s or _quickstart_job_seconds()
    print(f"{'job':>3} {'wall s':>7} {'sim s':>6} {'train s':>7} {'eval s':>6} "
          f"{'overhead s':>10} {'RSS MB':>7} {'ΔRSS MB':>8}")
    for i, row in enumerate(rows):
        delta = row["rss_mb"] - rows[i - 1]["rss_mb"] if i else float("nan")
        print(f"{row['job']:>3} {row['wall_s']:>7.2f} {row['simulate_s']:>6.2f} "
              f"{row['train_s']:>7.2f} {row['eval_s']:>6.2f} {row['overhead_s']:>10.2f} "
              f"{row['rss_mb']:>7.0f} {delta:>8.1f}")
    later = rows[1:] or rows
    overhead = sorted(r["overhead_s"] for r in later)[len(later) // 2]
    growth = ((rows[-1]["rss_mb"] - rows[1]["rss_mb"]) / max(1, len(rows) - 2)
              if len(rows) > 2 else float("nan"))
    print(f"\nmedian overhead per job (after the first): {overhead:.2f} s")
    if quickstart:
        print(f"quickstart job: {quickstart:.1f} s -> overhead {overhead / quickstart:.1%} "
              "(target < 10%)")
    print(f"RSS growth per job after the first: {growth:.1f} MB (target < 50 MB)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "median_overhead_s": overhead,
                                    "rss_growth_mb_per_job": growth,
                                    "quickstart_job_s": quickstart}, indent=2))
    print(f"written: {args.out}")
    return 0


def _quickstart_job_seconds() -> float | None:
    """Mean ``time_total_s`` of FINISHED quickstart runs in the default store, if any."""
    from ptycho.runner.tracking import Tracker, default_store

    uri, _ = default_store(ROOT)
    if not (ROOT / "outputs" / "mlflow.db").is_file():
        return None
    tracker = Tracker(uri)
    experiment = tracker.client.get_experiment_by_name("quickstart")
    if experiment is None:
        return None
    runs = tracker.find_runs(experiment.experiment_id, "attributes.status = 'FINISHED'")
    totals = [r.metrics["time_total_s"] for r in runs if "time_total_s" in r.metrics]
    return sum(totals) / len(totals) if totals else None


if __name__ == "__main__":
    sys.exit(main())
