"""bench/gpu_check.py, the device check, runs here in its CPU mode: every step ends ok within
its time limit and the report names each step with its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_on_a_cpu_and_reports_every_step(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    done = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--cpu", "--time-limit", "420", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=480, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    steps = {step["step"]: step for step in report["steps"]}
    assert list(steps) == ["device", "throughput", "study", "bound"]
    assert all(step["status"] == "ok" for step in steps.values())
    assert steps["device"]["results"][0]["gpus"] == []  # this VM has none
    throughput = steps["throughput"]["results"]
    assert {(row["N"], row["gridsize"]) for row in throughput} == {(16, 1), (16, 2)}
    bound = steps["bound"]["results"][0]
    assert bound["N"] == 16 and bound["bound_s"] > 0 and bound["amp_mse_crb"] > 0
    assert "study" in done.stdout and "written:" in done.stdout
