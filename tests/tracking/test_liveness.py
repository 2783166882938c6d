"""Stale-run detection, heartbeats, termination signals and a fresh SQLite store under load."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ptycho.runner.tracking import Heartbeat, RunRecord, stale_reason
from ptycho.runner.tracking.provenance import host_tags, process_state


def record(tags: dict[str, str], start_time: float = 0.0) -> RunRecord:
    return RunRecord(run_id="r", name="n", status="RUNNING", metrics={}, params={}, tags=tags,
                     start_time=start_time)


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_a_run_of_this_live_process_is_not_stale_even_with_an_old_heartbeat() -> None:
    tags = {**host_tags(), "heartbeat": "0"}
    assert process_state(tags["host"], tags["process_id"], tags["process_start"]) == "alive"
    assert stale_reason(record(tags), stale_after_s=1.0) is None


def test_a_run_whose_process_is_gone_on_this_host_is_stale_at_once() -> None:
    pid = dead_pid()
    tags = {"host": platform.node(), "process_id": str(pid), "process_start": "12345",
            "heartbeat": f"{time.time():.0f}"}
    reason = stale_reason(record(tags), stale_after_s=3600.0)
    assert reason is not None and f"process {pid}" in reason and "is gone" in reason


def test_a_reused_process_id_does_not_keep_a_dead_run_alive() -> None:
    tags = {**host_tags(), "process_start": "1"}  # this pid, but another process's start
    assert stale_reason(record(tags), stale_after_s=3600.0) is not None


@pytest.mark.parametrize(("age_s", "stale"), [(10.0, False), (700.0, True)])
def test_on_another_host_the_heartbeat_age_decides(age_s: float, stale: bool) -> None:
    now = 1_800_000_000.0
    tags = {"host": "elsewhere-node-17", "process_id": "4242", "heartbeat": f"{now - age_s}"}
    reason = stale_reason(record(tags), stale_after_s=600.0, now=now)
    assert (reason is not None) == stale
    if stale:
        assert "no heartbeat" in reason and "stale_after_s=600" in reason


def test_without_a_heartbeat_the_start_time_counts() -> None:
    now = 1_800_000_000.0
    tags = {"host": "elsewhere", "process_id": "1"}
    assert stale_reason(record(tags, start_time=now - 5), 600.0, now=now) is None
    assert stale_reason(record(tags, start_time=now - 5000), 600.0, now=now) is not None


class RecordingTracker:
    def __init__(self, fail: bool = False) -> None:
        self.beats: list[float] = []
        self.fail = fail

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        if self.fail:
            raise RuntimeError("database is locked")
        self.beats.append(float(tags["heartbeat"]))


def test_the_heartbeat_renews_until_its_block_ends() -> None:
    tracker = RecordingTracker()
    with Heartbeat(tracker, "r", interval_s=0.05):  # type: ignore[arg-type]
        time.sleep(0.4)
    count = len(tracker.beats)
    assert count >= 4  # one at entry, then every 50 ms
    time.sleep(0.2)
    assert len(tracker.beats) == count  # stopped with the block


def test_a_failing_heartbeat_never_stops_the_job() -> None:
    with Heartbeat(RecordingTracker(fail=True), "r", interval_s=0.05):  # type: ignore[arg-type]
        time.sleep(0.15)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, check=False,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": os.environ.get("PATH", "")})


def test_sigterm_raises_terminated_once_and_the_old_handler_comes_back() -> None:
    done = run_python("""
        import os, pickle, signal
        from ptycho.runner import signals as runtime
        from ptycho.runner.process import PROCESS
        before = signal.getsignal(signal.SIGTERM)
        try:
            with runtime.termination_handlers():
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    raise SystemExit("signal did not arrive")
                except runtime.Terminated as stop:
                    print(stop, runtime.exit_code(stop), isinstance(stop, KeyboardInterrupt))
                os.kill(os.getpid(), signal.SIGTERM)  # a repeat while stopping: ignored
                print("repeat ignored", runtime.termination_signal())
        except runtime.Terminated:
            print("repeat raised")
        print(signal.getsignal(signal.SIGTERM) is before, runtime.termination_signal())
        PROCESS.received.clear()  # a fresh process's state, for Ctrl-C
        with runtime.termination_handlers():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                raise SystemExit("signal did not arrive")
            except runtime.Terminated as stop:
                print(stop, runtime.exit_code(stop))
        copy = pickle.loads(pickle.dumps(runtime.Terminated(signal.SIGINT)))
        print(type(copy).__name__, copy.signum, copy)
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "terminated by SIGTERM 143 True", "repeat ignored 15", "True None",
        "terminated by SIGINT 130", "Terminated 2 terminated by SIGINT"]


def test_a_signal_inside_an_uninterrupted_block_takes_effect_when_the_block_ends() -> None:
    done = run_python("""
        import os, signal
        from ptycho.runner import signals as runtime
        from ptycho.runner.process import PROCESS
        with runtime.termination_handlers():
            try:
                with runtime.uninterrupted():
                    with runtime.uninterrupted():
                        os.kill(os.getpid(), signal.SIGTERM)
                        print("inner block finished")
                    print("outer block finished")
                print("not raised")
            except runtime.Terminated as stop:
                print("then", stop)
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["inner block finished", "outer block finished",
                                        "then terminated by SIGTERM"]


def test_a_signal_during_store_writes_still_lets_the_job_close_its_run_killed(
    tmp_path: Path,
) -> None:
    """SIGTERM lands while the job is logging (as a job's per-epoch metrics do): the write in
    flight completes, then ``Terminated`` unwinds and closing the run as KILLED works at once.
    Cut in half, the SQLite transaction held its lock while the traceback lived, and the close
    failed with "database is locked" after MLflow's 20 s busy timeout (the run stayed RUNNING)."""
    done = run_python(f"""
        import os, random, signal, threading, time
        from ptycho.runner import signals as runtime
        from ptycho.runner.process import PROCESS
        from ptycho.runner.tracking import Tracker
        tracker = Tracker("sqlite:///{tmp_path}/mlflow.db")
        experiment = tracker.ensure_experiment("signals")
        random.seed(0)
        with runtime.termination_handlers():
            for trial in range(6):
                run_id = tracker.create_run(experiment, f"job{{trial}}")
                threading.Timer(random.uniform(0.05, 0.3),
                                lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
                step = 0
                try:
                    while True:
                        tracker.log_metrics(run_id, {{"loss": 1.0 / (step + 1)}}, step=step)
                        step += 1
                except runtime.Terminated:
                    start = time.monotonic()
                    tracker.close_run(run_id, "KILLED", "killed", "terminated by SIGTERM")
                    run = tracker.get_run(run_id)
                    print(run.status, step > 0, time.monotonic() - start < 5)
                PROCESS.received.clear()  # the next trial is a fresh job
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["KILLED True True"] * 6


@pytest.mark.slow
def test_parallel_processes_on_a_fresh_sqlite_store_lose_no_run_and_no_metric(
    tmp_path: Path,
) -> None:
    """Four processes open one fresh store at the same moment and write at once."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    worker = textwrap.dedent(f"""
        import sys, time
        from ptycho.runner.tracking import Tracker
        start = float(sys.argv[1])
        while time.time() < start:
            time.sleep(0.005)
        tracker = Tracker({uri!r})
        experiment = tracker.ensure_experiment("race")
        for index in range(3):
            run = tracker.create_run(experiment, f"w{{sys.argv[2]}}_{{index}}")
            for step in range(20):
                tracker.log_metrics(run, {{"loss": float(step)}}, step=step)
            tracker.end_run(run)
    """)
    start = f"{time.time() + 8:.3f}"  # all four import first, then go together
    processes = [subprocess.Popen([sys.executable, "-c", worker, start, str(i)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(4)]
    for process in processes:
        _, errors = process.communicate(timeout=180)
        assert process.returncode == 0, errors[-3000:]
    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "race"]
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert len(runs) == 12 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 20
