"""Scaling out and faults: parallel launchers, a tracking server, signals, stale runs, full disks.

Every test drives ``python run.py -m ...`` in a subprocess against its own temporary store.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from ptycho.evaluation import METRIC_KEYS

ROOT = Path(__file__).resolve().parents[1]
ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin", "TF_NUM_INTRAOP_THREADS": "1",
       "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
NO_REPORT = "~hydra.callbacks.report"  # the report is tested in test_run.py and test_report.py
RACE_ERRORS = ("already exists", "already active", "database is locked",
               "CircularDependencyError", "UNIQUE constraint")

pytestmark = pytest.mark.slow


def command(args: list[str], store: Path, uri: str | None = None) -> list[str]:
    """``python run.py ARGS`` with store, cache and sweep folder under ``store``."""
    return [
        sys.executable, "run.py", *args, NO_REPORT,
        f"tracking.uri={uri or f'sqlite:///{store}/mlflow.db'}",
        f"data.cache_dir={store}/cache",
        f"hydra.sweep.dir={store}/sweeps/{time.time_ns()}",
        f"hydra.run.dir={store}/runs/{time.time_ns()}",
    ]


def run(args: list[str], store: Path, uri: str | None = None,
        timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command(args, store, uri), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False, env=ENV)


def start(args: list[str], store: Path) -> subprocess.Popen:
    """A sweep in the background, in its own process group; output to ``store/sweep.log``."""
    log = (store / "sweep.log").open("a")
    return subprocess.Popen(command(args, store), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            text=True, env=ENV, start_new_session=True)


def all_runs(uri: str, experiment: str = "smoke") -> list:
    mlflow = MlflowClient(tracking_uri=uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    return mlflow.search_runs([found.experiment_id], run_view_type=ViewType.ACTIVE_ONLY,
                              max_results=1000)


def split(runs: list) -> tuple[list, list]:
    parents = [r for r in runs if r.data.tags.get("ptycho.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def training_run(uri: str, epochs: int | None = None):
    """The RUNNING child that has logged at least one epoch (it is mid-training), if any; only
    one configured for ``epochs`` epochs when given."""
    for candidate in split(all_runs(uri))[1]:
        if (candidate.info.status == "RUNNING" and "train_loss" in candidate.data.metrics
                and epochs in (None, int(candidate.data.params["train.epochs"]))):
            return candidate
    return None


def sqlite(store: Path) -> str:
    return f"sqlite:///{store}/mlflow.db"


# --- parallel launchers ---------------------------------------------------------------------


def test_joblib_runs_three_smoke_jobs_in_parallel_on_a_fresh_sqlite_store(tmp_path: Path) -> None:
    """Three jobs on two workers: both start at once on an empty store (the race), and one
    worker is reused for the third."""
    done = run(["-m", "experiment=smoke", "seed=0,1,2",
                "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    for error in RACE_ERRORS:
        assert error not in output, f"{error!r} in the sweep's output"
    parents, children = split(all_runs(sqlite(tmp_path)))
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 3
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    for child in children:
        missing = set(METRIC_KEYS) - set(child.data.metrics)
        assert not missing, f"{child.info.run_name} lacks {sorted(missing)}"
        history = MlflowClient(sqlite(tmp_path)).get_metric_history(child.info.run_id,
                                                                      "train_loss")
        assert [m.step for m in history] == [1, 2]
    worker_pids = {c.data.tags["process_id"] for c in children}
    assert parents[0].data.tags["process_id"] not in worker_pids  # jobs ran in workers
    assert len(worker_pids) == 2, worker_pids  # two at a time, in reused workers


# --- a shared tracking server ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rest(base: str, path: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(base + path, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


@pytest.fixture
def tracking_server(tmp_path: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 (a free port) over its own SQLite file and artifact
    folder; stopped (its whole process group) at the end."""
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_for(healthy, 180, "the MLflow server to answer", interval=1.0)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_a_sweep_against_a_tracking_server_is_visible_through_its_rest_api(
    tmp_path: Path, tracking_server: str
) -> None:
    store = tmp_path / "client"
    store.mkdir()
    done = run(["-m", "experiment=smoke"], store, uri=tracking_server)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert not (store / "mlflow.db").exists()  # nothing went to a local store

    experiment = rest(tracking_server, "/api/2.0/mlflow/experiments/get-by-name?"
                      + urllib.parse.urlencode({"experiment_name": "smoke"}))["experiment"]
    found = rest(tracking_server, "/api/2.0/mlflow/runs/search",
                 {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in found]
    children = [r for r, t in zip(found, tags, strict=True) if "mlflow.parentRunId" in t]
    parents = [r for r, t in zip(found, tags, strict=True) if t.get("ptycho.role") == "sweep"]
    assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
    assert len(children) == 1 and children[0]["info"]["status"] == "FINISHED"
    for child in children:
        metrics = {m["key"] for m in child["data"]["metrics"]}
        assert set(METRIC_KEYS) <= metrics
        run_id = child["info"]["run_id"]
        listed = rest(tracking_server, "/api/2.0/mlflow/artifacts/list?"
                      + urllib.parse.urlencode({"run_id": run_id}))
        names = {f["path"] for f in listed.get("files", [])}
        assert {"config.yaml", "metrics.json", "figures"} <= names, names
        # The artifact's bytes come back through the server's artifact proxy.
        artifact_uri = child["info"]["artifact_uri"]
        assert artifact_uri.startswith("mlflow-artifacts:"), artifact_uri
        path = artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")
        with urllib.request.urlopen(
                f"{tracking_server}/api/2.0/mlflow-artifacts/artifacts/{path}/metrics.json",
                timeout=30) as response:
            logged = json.loads(response.read())
        assert logged["amp_ssim"] == pytest.approx(
            {m["key"]: m["value"] for m in child["data"]["metrics"]}["amp_ssim"])


# --- faults ---------------------------------------------------------------------------------

# Long enough that no job can finish before the test's signal reaches it, even when one worker
# starts training well before the other (CI once saw a 400-epoch job, 0.1 s an epoch, finish
# before the signal came); the tests kill these jobs, so the length costs nothing.
LONG_EPOCHS = 5000
LONG_JOB = ["experiment=smoke", f"train.epochs={LONG_EPOCHS}",
            f"train.early_stopping_patience={LONG_EPOCHS}"]


def training_runs(uri: str, count: int):
    """The runs in training, once there are ``count`` of them."""
    found = [c for c in split(all_runs(uri))[1]
             if c.info.status == "RUNNING" and "train_loss" in c.data.metrics]
    return found if len(found) >= count else None


@pytest.mark.parametrize(("launcher", "signum"), [("basic", signal.SIGTERM),
                                                  ("joblib", signal.SIGTERM)])
def test_a_termination_signal_to_the_sweep_marks_its_jobs_and_the_sweep_killed(
    store: Path, launcher: str, signum: signal.Signals
) -> None:
    """``kill PID`` or Ctrl-C on the sweep's process. Under joblib (two workers, a third job
    queued) the signal is passed on to both running jobs, and the queued one never starts."""
    parallel = launcher == "joblib"
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1,2"] if parallel else [
        "seed=0,1"]
    sweep = start(["-m", *LONG_JOB, *extra], store)
    try:
        victims = wait_for(lambda: training_runs(sqlite(store), 2 if parallel else 1), 240,
                           "jobs in training")
        os.kill(sweep.pid, signum)
        code = sweep.wait(timeout=180)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    log = (store / "sweep.log").read_text()
    assert code == 128 + signum, log[-3000:]
    parents, children = split(all_runs(sqlite(store)))
    assert {c.info.run_id for c in children} == {v.info.run_id for v in victims}  # no new job
    expected = "terminated by SIGTERM" if parallel else f"terminated by {signum.name}"
    for child in children:
        assert child.info.status == "KILLED", log[-3000:]
        assert child.data.tags["error"] == expected
    assert parents[0].info.status == "KILLED"
    if parallel:
        assert len({c.data.tags["process_id"] for c in children}) == 2  # two worker processes
        assert "not started: the sweep is stopping" in log or len(children) == 2


def signal_the_long_job(launcher: str, signum: signal.Signals, store: Path) -> tuple[int, str]:
    """A 2-job sweep (2 and ``LONG_EPOCHS`` epochs) under ``launcher``; ``signum`` to the long
    job's process once it trains. Returns the sweep's exit code and log."""
    sweep = start(["-m", "experiment=smoke", f"train.epochs=2,{LONG_EPOCHS}",
                   f"train.early_stopping_patience={LONG_EPOCHS}",
                   f"hydra/launcher={launcher}"], store)
    try:
        victim = wait_for(lambda: training_run(sqlite(store), epochs=LONG_EPOCHS), 240,
                          "the long job in training")
        os.kill(int(victim.data.tags["process_id"]), signum)
        code = sweep.wait(timeout=240)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    return code, (store / "sweep.log").read_text()


def test_a_signal_to_one_job_process_kills_that_job_and_the_sweep_reports_it(
    store: Path,
) -> None:
    """As ``scancel`` of one array task: under submitit_local SIGTERM reaches one job's process;
    that run closes KILLED, the other job finishes, and the sweep ends with its summary."""
    code, log = signal_the_long_job("submitit_local", signal.SIGTERM, store)
    assert code == 1, log[-3000:]
    parents, children = split(all_runs(sqlite(store)))
    status = {int(c.data.params["train.epochs"]): c.info.status for c in children}
    assert status == {2: "FINISHED", LONG_EPOCHS: "KILLED"}, log[-3000:]
    assert parents[0].info.status == "KILLED"
    assert "KILLED" in log and "terminated by SIGTERM" in log  # the summary table says so
    pids = {c.data.tags["process_id"] for c in children}  # submitit_local: a process per job
    assert len(pids) == 2 and parents[0].data.tags["process_id"] not in pids


def test_a_sweep_killed_outright_resumes_rerunning_only_the_killed_job(store: Path) -> None:
    """SIGKILL mid-job leaves a RUNNING run; the resumed sweep marks it FAILED (stale), skips
    the finished job, reruns the killed one, and keeps one FINISHED run per config_hash."""
    args = ["-m", "experiment=smoke", "train.epochs=2,30", "resume=true"]
    sweep = start(args, store)
    try:
        victim = wait_for(lambda: training_run(sqlite(store), epochs=30), 180,
                          "the second job in training")
        first = [c for c in split(all_runs(sqlite(store)))[1] if c.info.status == "FINISHED"]
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait(timeout=60)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert len(first) == 1, "the first job should have finished before the kill"
    assert MlflowClient(sqlite(store)).get_run(victim.info.run_id).info.status == "RUNNING"

    done = run(args, store)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    parents, children = split(all_runs(sqlite(store)))
    stale = next(c for c in children if c.info.run_id == victim.info.run_id)
    assert stale.info.status == "FAILED"
    assert stale.data.tags["status_reason"] == "stale"
    assert "is gone" in stale.data.tags["error"], stale.data.tags["error"]
    finished = [c for c in children if c.info.status == "FINISHED"]
    hashes = [c.data.tags["config_hash"] for c in finished]
    assert len(finished) == 2 and len(set(hashes)) == 2  # no duplicate FINISHED run
    assert first[0].info.run_id in {c.info.run_id for c in finished}  # skipped, not rerun
    assert victim.data.tags["config_hash"] in hashes  # the killed job ran again
    assert "SKIPPED" in output
    old_parent = next(p for p in parents if p.info.run_id == victim.data.tags[
        "mlflow.parentRunId"])
    assert old_parent.info.status == "FAILED"
    assert old_parent.data.tags["status_reason"] == "stale"


def test_isolate_gives_every_job_a_fresh_process_whose_death_fails_only_its_run(
    store: Path,
) -> None:
    """``isolate=true`` in one reused worker (local_parallel, one job at a time): each job runs
    in a child process of its own that ends with it; a child killed outright (as by the
    out-of-memory killer) fails its run, and the sweep goes on to its summary."""
    sweep = start(["-m", "experiment=smoke", f"train.epochs=2,{LONG_EPOCHS}",
                   f"train.early_stopping_patience={LONG_EPOCHS}", "hydra/launcher=local_parallel",
                   "hydra.launcher.n_jobs=1", "isolate=true"], store)
    try:
        victim = wait_for(lambda: training_run(sqlite(store), epochs=LONG_EPOCHS), 240,
                          "the long job in training")
        child = int(victim.data.tags["process_id"])
        assert child != sweep.pid  # the work runs in a child of the job process
        os.kill(child, signal.SIGKILL)
        code = sweep.wait(timeout=180)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    log = (store / "sweep.log").read_text()
    assert code == 1, log[-3000:]  # a failed job: the sweep ends non-zero, not killed
    parents, children = split(all_runs(sqlite(store)))
    by_epochs = {int(c.data.params["train.epochs"]): c for c in children}
    assert by_epochs[2].info.status == "FINISHED"
    died = by_epochs[LONG_EPOCHS]
    assert died.info.status == "FAILED"
    assert "killed by SIGKILL" in died.data.tags["error"], died.data.tags["error"]
    assert parents[0].info.status == "FAILED"
    assert "killed by SIGKILL" in log  # the summary names the cause
    assert log.count("(isolate=true)") == 2
    pids = [int(c.data.tags["process_id"]) for c in children]
    assert len(set(pids)) == 2
    for pid in pids:  # each child process ended with its job (its memory returned)
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_under_local_isolated_a_job_killed_outright_is_summarised_and_the_sweep_goes_on(
    store: Path,
) -> None:
    """Hydra's own submitit launcher stops waiting when one job dies without a result; ours
    closes that job's run FAILED, waits for the others, and prints the summary."""
    code, log = signal_the_long_job("local_isolated", signal.SIGKILL, store)
    assert code == 1, log[-3000:]
    parents, children = split(all_runs(sqlite(store)))
    status = {int(c.data.params["train.epochs"]): c for c in children}
    assert status[2].info.status == "FINISHED"
    dead = status[LONG_EPOCHS]
    assert dead.info.status == "FAILED" and dead.data.tags["status_reason"] == "died"
    assert "produced no result" in dead.data.tags["error"]
    assert "produced no result" in log and "FINISHED" in log  # the summary table was printed
    assert parents[0].info.status == "FAILED"


def test_the_slurm_preset_asks_for_one_gpu_per_job_in_the_partition_given(store: Path) -> None:
    """No cluster here: a stand-in ``sbatch`` keeps the script submitit wrote and refuses it."""
    bin_dir = store / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text('#!/bin/sh\ncp "$1" "$KEEP_SBATCH"\n'
                    'echo "sbatch: error: no cluster in this test" >&2\nexit 1\n')
    fake.chmod(0o755)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it
    (bin_dir / "srun").chmod(0o755)
    kept = store / "job.sbatch"
    done = subprocess.run(
        command(["-m", "experiment=smoke", "gridsize=1,2", "hydra/launcher=slurm",
                 "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90"], store),
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**ENV, "PATH": f"{bin_dir}:{ENV['PATH']}", "KEEP_SBATCH": str(kept)},
    )
    assert done.returncode != 0
    script = kept.read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --time=90", "#SBATCH --mem=64GB", "#SBATCH --array=0-1%2",
                 "#SBATCH --signal=USR2@120"):
        assert line in script, f"{line!r} not in\n{script}"
    assert "submitit.core._submit" in script
    (parent,) = split(all_runs(sqlite(store)))[0]
    assert parent.info.status == "FAILED"  # the submission failed: the parent is closed
