"""The team's tracking server for real: Debian's PostgreSQL under an ``mlflow server``, started
and stopped by ``ops/team_server.sh`` (``make server``). A parallel sweep logs to it, a job killed
outright is resumed, the report is built from it, and every run, metric and artifact is read back
through the REST API.

Needs Debian's ``postgresql`` and the ``[team]`` extra; ``.ci/run`` installs PostgreSQL and sets
``PTYCHO_REQUIRE_SERVICES=1``, under which a missing server fails the tests instead of skipping.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.test_scaling import (
    ENV,
    command,
    free_port,
    rest,
    split,
    training_run,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "ops" / "team_server.sh"

pytestmark = pytest.mark.slow


def _server_env(folder: Path, port: int, pg_port: int) -> dict[str, str]:
    return {**os.environ, "PTYCHO_SERVER_DIR": str(folder), "PTYCHO_SERVER_PORT": str(port),
            "PTYCHO_PG_PORT": str(pg_port), "PTYCHO_PYTHON": sys.executable}


def _script(action: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), action], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


@pytest.fixture(scope="module")
def team_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PostgreSQL and an MLflow server on it, on free ports; stopped at the end, which must
    leave neither running."""
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        message = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("PTYCHO_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("team_server")
    for parent in (folder, *folder.parents):  # the cluster's owner (postgres, under root)
        if parent.stat().st_uid == os.getuid() and parent != Path("/"):  # must reach it
            os.chmod(parent, parent.stat().st_mode | 0o011)
    env = _server_env(folder, free_port(), free_port())
    started = _script("start", env)
    assert started.returncode == 0, started.stdout + started.stderr
    uri = started.stdout.strip().splitlines()[-1].removeprefix("export MLFLOW_TRACKING_URI=")
    assert uri == f"http://127.0.0.1:{env['PTYCHO_SERVER_PORT']}"
    try:
        yield uri
    finally:
        stopped = _script("stop", env)
        status = _script("status", env).stdout
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "MLflow server: stopped" in status and "PostgreSQL: stopped" in status, status


def _runs(uri: str, experiment: str = "smoke") -> list[dict]:
    found = rest(uri, "/api/2.0/mlflow/experiments/get-by-name?"
                 + urllib.parse.urlencode({"experiment_name": experiment}))["experiment"]
    return rest(uri, "/api/2.0/mlflow/runs/search",
                {"experiment_ids": [found["experiment_id"]], "max_results": 1000})["runs"]


def _artifact_files(uri: str, run_id: str, path: str = "") -> list[str]:
    query = {"run_id": run_id, **({"path": path} if path else {})}
    listed = rest(uri, "/api/2.0/mlflow/artifacts/list?" + urllib.parse.urlencode(query))
    files = []
    for entry in listed.get("files", []):
        if entry.get("is_dir"):
            files += _artifact_files(uri, run_id, entry["path"])
        else:
            files.append(entry["path"])
    return files


def _download(uri: str, artifact_uri: str, path: str) -> bytes:
    root = artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")
    with urllib.request.urlopen(f"{uri}/api/2.0/mlflow-artifacts/artifacts/{root}/{path}",
                                timeout=60) as response:
        return response.read()


def test_a_parallel_sweep_on_postgresql_loses_nothing_and_reports(tmp_path: Path,
                                                                 team_server: str) -> None:
    """Two smoke jobs side by side (local_parallel) on the PostgreSQL-backed server: the parent
    and both children FINISHED; every metric of each job's metrics.json comes back through the
    REST API with its value; every artifact listed downloads; the report is built from the
    server."""
    store = tmp_path / "client"
    store.mkdir()
    args = ["-m", "experiment=smoke", "dose=1e3,1e5", "hydra/launcher=local_parallel"]
    done = subprocess.run([c for c in command(args, store, team_server)
                           if c != "~hydra.callbacks.report"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, check=False, env=ENV)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert not (store / "mlflow.db").exists()  # nothing went to a local store
    runs = _runs(team_server)
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    parents = [r for r, t in zip(runs, tags, strict=True) if t.get("ptycho.role") == "sweep"]
    children = [r for r, t in zip(runs, tags, strict=True) if "mlflow.parentRunId" in t]
    assert len(parents) == 1 and len(children) == 2
    assert {r["info"]["status"] for r in [*parents, *children]} == {"FINISHED"}
    written = read = artifacts = 0
    for child in children:
        logged = {m["key"]: m["value"] for m in child["data"]["metrics"]}
        files = _artifact_files(team_server, child["info"]["run_id"])
        assert {"config.yaml", "metrics.json", "reconstruction.npz",
                "figures/reconstruction.png"} <= set(files), files
        saved = json.loads(_download(team_server, child["info"]["artifact_uri"], "metrics.json"))
        for key, value in saved.items():
            assert logged[key] == pytest.approx(value, nan_ok=True), key
        for name in files:
            assert _download(team_server, child["info"]["artifact_uri"], name), name
        written, read, artifacts = written + len(saved), read + len(logged), artifacts + len(files)
    print(f"PostgreSQL server: 3 runs; {written} metrics written, {read} read back (with the "
          f"axes and curves' last values); {artifacts} artifacts listed and downloaded")
    reports = list((store / "sweeps").glob("*/report/runs.csv"))
    assert len(reports) == 1, output[-2000:]
    table = pd.read_csv(reports[0])
    assert sorted(table["status"]) == ["FINISHED", "FINISHED"]
    assert set(table["run_id"]) == {c["info"]["run_id"] for c in children}


def test_a_job_killed_outright_on_postgresql_is_resumed(tmp_path: Path,
                                                        team_server: str) -> None:
    """SIGKILL to the sweep mid-job leaves a RUNNING run on the server; the resumed sweep marks
    it FAILED (stale), skips the finished job and reruns only the killed one."""
    store = tmp_path / "client"
    store.mkdir()
    experiment = "killed_on_postgres"
    args = ["-m", "experiment=smoke", "train.epochs=2,30", f"tracking.experiment={experiment}"]
    log = (store / "sweep.log").open("a")
    sweep = subprocess.Popen(command(args, store, team_server), cwd=ROOT, stdout=log,
                             stderr=subprocess.STDOUT, text=True, env=ENV,
                             start_new_session=True)
    client = MlflowClient(tracking_uri=team_server)

    def runs() -> list:
        found = client.get_experiment_by_name(experiment)
        return [] if found is None else client.search_runs([found.experiment_id])

    try:
        victim = wait_for(lambda: _training(runs()), 240, "the second job in training")
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait(timeout=60)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert client.get_run(victim.info.run_id).info.status == "RUNNING"
    done = subprocess.run(command(args, store, team_server), cwd=ROOT, capture_output=True,
                          text=True, timeout=900, check=False, env=ENV)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    _, children = split(runs())
    stale = next(c for c in children if c.info.run_id == victim.info.run_id)
    assert stale.info.status == "FAILED" and stale.data.tags["status_reason"] == "stale"
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == 2
    assert len({c.data.tags["config_hash"] for c in finished}) == 2
    assert "SKIPPED" in done.stdout + done.stderr


def _training(found: list):
    """The 30-epoch child once it is mid-training, after the 2-epoch one finished."""
    done = [c for c in found if c.info.status == "FINISHED" and "mlflow.parentRunId" in
            c.data.tags]
    running = [c for c in found if c.info.status == "RUNNING" and "train_loss" in c.data.metrics
               and c.data.params.get("train.epochs") == "30"]
    return running[0] if done and running else None


assert training_run  # the SQLite tests' helper; ours also waits for the finished job
