"""Sweeps on a real SLURM: a single-node cluster from Debian's packages (slurmctld, slurmd,
slurmdbd on MariaDB, munge), started by ``ops/slurm_cluster.sh``; a smoke sweep submitted with
``hydra/launcher=slurm`` through the real ``sbatch``; one job cancelled with ``scancel`` mid-run;
the resumed sweep reruns only that job.

Needs root and ``slurm-wlm slurmdbd munge mariadb-server``; ``.ci/run`` installs them and sets
``PTYCHO_REQUIRE_SERVICES=1``, under which a missing cluster fails the test instead of skipping.
(``tests/test_scaling.py`` keeps a stand-in ``sbatch`` for what this cluster cannot show: the
preset's request of one GPU per job.)
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.test_scaling import ENV, command, split, wait_for

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "ops" / "slurm_cluster.sh"
TOOLS = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sbatch")
LONG = 150  # epochs of the job that is cancelled: seconds more after its first epoch is logged

pytestmark = pytest.mark.slow


def _free_base() -> int:
    """A port with the three after it free too (slurmctld, slurmd, MariaDB, slurmdbd)."""
    for _ in range(200):
        base = random.randrange(20000, 40000)
        try:
            for port in range(base, base + 4):
                with socket.socket() as probe:
                    probe.bind(("0.0.0.0", port))
            return base
        except OSError:
            continue
    raise AssertionError("no four free ports in a row")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The cluster; its environment (``SLURM_CONF``) for the sweep's processes."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing or os.getuid() != 0:
        message = (f"no SLURM here ({', '.join(missing) or 'not root'}): apt-get install "
                   "slurm-wlm slurmdbd munge mariadb-server, as root")
        if os.environ.get("PTYCHO_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "PTYCHO_SLURM_DIR": str(folder), "PTYCHO_SLURM_PORT": str(_free_base())}
    started = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True,
                             env=env, timeout=300, check=False)
    assert started.returncode == 0, started.stdout + started.stderr
    conf = started.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF=")
    try:
        yield {**ENV, "SLURM_CONF": conf}
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, timeout=120, check=False)


def _slurm(args: list[str], env: dict[str, str]) -> str:
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60,
                          check=True).stdout


def test_a_sweep_runs_under_slurm_and_a_cancelled_job_is_rerun_alone(
    store: Path, slurm: dict[str, str]
) -> None:
    """Two smoke jobs as one sbatch array. While the long one trains, ``scancel`` it: its run
    ends KILLED (SLURM's SIGTERM), the sweep's summary says so and sacct says CANCELLED. The
    resumed sweep skips the finished job and reruns the cancelled one."""
    # ``store``: a migrated SQLite store (conftest), so this test's polling client and the
    # sweep never create its tables at once (CI saw the sweep's parent lost to that race)
    args = ["-m", "experiment=smoke", f"train.epochs=2,{LONG}",
            f"train.early_stopping_patience={LONG}", "hydra/launcher=slurm",
            "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
            "hydra.launcher.timeout_min=20"]
    uri = f"sqlite:///{store}/mlflow.db"
    log = (store / "sweep.log").open("a")
    sweep = subprocess.Popen(command(args, store), cwd=ROOT, stdout=log,
                             stderr=subprocess.STDOUT, text=True, env=slurm,
                             start_new_session=True)
    client = MlflowClient(tracking_uri=uri)
    try:
        victim = wait_for(lambda: _long_job_training(client), 300, "the long job in training")
        queue = _slurm(["squeue", "-h", "-o", "%i %j %T %N"], slurm)
        array = next(line.split()[0] for line in queue.splitlines()).split("_")[0]
        _slurm(["scancel", f"{array}_1"], slurm)  # the second job of the array: the long one
        sweep.wait(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    output = (store / "sweep.log").read_text()
    print("squeue while the long job trained:\n" + queue)
    cancelled = client.get_run(victim.info.run_id)
    assert cancelled.info.status in {"KILLED", "FAILED"}, cancelled.info.status
    summary = output[output.rindex("#  job"):]
    assert "KILLED" in summary or "FAILED" in summary, summary
    accounting = wait_for(lambda: _sacct(array, slurm), 60, "sacct to record the array")
    print("sacct:\n" + accounting)
    assert f"{array}_1|run|CANCELLED" in accounting and f"{array}_0|run|COMPLETED" in accounting

    done = subprocess.run(command(args, store), cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False, env=slurm)
    resumed = done.stdout + done.stderr
    assert done.returncode == 0, resumed[-3000:]
    print("resumed summary:\n" + resumed[resumed.rindex("#  job"):])
    _, children = split(client.search_runs([cancelled.info.experiment_id]))
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert sorted(int(c.data.params["train.epochs"]) for c in finished) == [2, LONG]
    assert sum(c.data.params["train.epochs"] == "2" for c in children) == 1  # not rerun
    assert "SKIPPED" in resumed


def _long_job_training(client: MlflowClient):
    """The long job's run as soon as it has logged an epoch (cancelled at once, it cannot
    finish first; CI once saw an 80-epoch job finish while the test waited for the short
    one)."""
    found = client.get_experiment_by_name("smoke")
    if found is None:
        return None
    long_training = [r for r in client.search_runs([found.experiment_id])
                     if r.info.status == "RUNNING"
                     and r.data.params.get("train.epochs") == str(LONG)
                     and "train_loss" in r.data.metrics]
    return long_training[0] if long_training else None


def _sacct(array: str, env: dict[str, str]) -> str | None:
    """sacct's lines for the array once both jobs have ended in the accounting database."""
    text = _slurm(["sacct", "-j", array, "-o", "JobID,JobName,State,ExitCode", "--parsable2"],
                  env)
    ended = [line for line in text.splitlines() if "|run|" in line
             and not line.split("|")[2].startswith(("RUNNING", "PENDING"))]
    if len(ended) < 2:
        time.sleep(1)
        return None
    return text
